"""What a task tab's model picker offers and says: the models that have the tab's head, labelled with their size,
and how many tokens the chosen one reads.

Everything here comes from config.json files and rpln_core.catalog, never from loading weights (nor importing torch),
so the page lays out in a second and a wrong pick is refused before gigabytes are read. It is a hint for the
pickers only: the loader still checks every checkpoint it loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rpln_core.catalog import ARCHITECTURE_TASKS, BUNDLED_DIR, ModelCard, bundled_models, checkpoint_config, model_card
from rpln_core.errors import RplnError

# the task tabs, in page order
TASKS = ("fill-mask", "classification", "qa", "token-classification", "multiple-choice", "causal-lm")
TAB_NAMES = {"fill-mask": "Fill-mask", "classification": "Classification", "qa": "Question answering",
             "token-classification": "Token tagging", "multiple-choice": "Multiple choice",
             "causal-lm": "Generation"}
ENDPOINTS = {"fill-mask": "/fill_mask", "classification": "/classify", "qa": "/answer",
             "token-classification": "/tag", "multiple-choice": "/choose", "causal-lm": "/generate"}
HEAD_WORDS = {
    "fill-mask": "a fill-mask (masked-LM)",
    "classification": "a classification",
    "qa": "a question-answering",
    "token-classification": "a token-classification",
    "multiple-choice": "a multiple-choice",
    "causal-lm": "a text-generation (causal-LM)",
    "base": "a bare-encoder (no task head)",
}
LOADED_TASKS = {"mlm": "fill-mask"}  # a loaded model's task where the tabs name it otherwise
# The head a config.json's `architectures` names, by class suffix: the loader's table in the tabs' words, "Model" (no
# head) last as every name ends so. A hint the loader checks.
CLASS_SUFFIXES = {suffix: LOADED_TASKS.get(task, task) for suffix, task in ARCHITECTURE_TASKS.items()}
MODEL_TYPES = ("roberta", "roberta-prelayernorm")
# RoBERTa reads 512 tokens: a model that reads (or was trained on) fewer gets its limit next to the text box.
LONG_ENOUGH = 512
WORDS_PER_TOKEN = 0.75  # English prose with a byte-level BPE: a rough guide for the visitor, not a count


@dataclass(frozen=True)
class ModelFacts:
    """What the pickers know of a model before loading it."""

    name: str
    source: str  # "bundled", "Hub" or "local"
    head: str | None  # a HEAD_WORDS key; None when unknown until loaded (a Hub id not downloaded yet)
    max_tokens: int | None  # longest input, special tokens included; None when unknown
    card: ModelCard | None
    on_disk: bool = True  # False: a Hub model no earlier download left in the local cache

    @property
    def short_name(self) -> str:
        return self.card.short_name if self.card is not None else self.name.rstrip("/").rsplit("/", 1)[-1]


def model_facts(name: str) -> ModelFacts:
    """Head, length limit and card of `name` (a bundled name, a checkpoint directory or a Hub id)."""
    card = model_card(name)
    if name in bundled_models():
        source, config = "bundled", _known(checkpoint_config(BUNDLED_DIR / name))
    elif Path(name).expanduser().is_dir():
        source, config = "local", _known(checkpoint_config(Path(name).expanduser()))
    else:
        hub_config = _hub_cached_config(name)
        source, config = "Hub", _known(checkpoint_config(hub_config.parent) if hub_config else None)
    if config is None:
        # The catalog's Hub checkpoints are published with their pre-training (masked-LM) head; RoBERTa reads 512.
        head = "fill-mask" if card is not None and source == "Hub" else None
        return ModelFacts(name, source, head, LONG_ENOUGH if head else None, card, on_disk=source != "Hub")
    return ModelFacts(name, source, _head(config), _max_tokens(config), card)


def _known(config: dict | None) -> dict | None:
    """`config` if it is a RoBERTa model's; None for anything else (unreadable: the loader will say why)."""
    return config if isinstance(config, dict) and config.get("model_type") in MODEL_TYPES else None


def _hub_cached_config(name: str) -> Path | None:
    """The config.json of Hub id `name` if an earlier download left it in the local cache; no network."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - not a valid Hub id: no head to report
        return None
    return Path(found) if isinstance(found, str) else None


def _head(config: dict) -> str | None:
    for class_name in config.get("architectures") or ["ForMaskedLM"]:  # the loader's default too
        for suffix, task in CLASS_SUFFIXES.items():
            if isinstance(class_name, str) and class_name.endswith(suffix):
                return task
    return None


def _max_tokens(config: dict) -> int | None:
    try:  # RoBERTa's positions start after the padding index (rpln_core.load.LoadedModel.max_tokens)
        return int(config["max_position_embeddings"]) - int(config.get("pad_token_id", 1)) - 1
    except (KeyError, TypeError, ValueError):
        return None


def picker_choices(models: list[str], task: str) -> list[tuple[str, str]]:
    """(label, name) for the models a `task` tab can run: bundled first, then Hub presets, then the rest (whose head
    is known only once loaded); each group in the order given."""
    facts = [model_facts(name) for name in models]
    fitting = [fact for fact in facts if fact.head in (task, None)]
    fitting.sort(key=lambda fact: 0 if fact.source == "bundled" else 1 if fact.source == "Hub" and fact.card else 2)
    return [(choice_label(fact), fact.name) for fact in fitting]


def choice_label(fact: ModelFacts) -> str:
    """A picker entry: the name, where it comes from and its size (a Hub model's download is about 4 bytes a
    parameter)."""
    if fact.card is None:
        return fact.name
    millions = fact.card.parameters_millions
    if fact.source == "Hub":
        return f"{fact.name} · Hub, {millions:g}M parameters, {fact.card.layers} layers, ~{millions * 4 / 1000:.1f} GB"
    return f"{fact.name} · {fact.source}, {millions:g}M parameters, {fact.card.layers} layers"


def wrong_head_message(name: str, head: str, task: str, api: bool = False) -> str | None:
    """What to tell a visitor who runs a `head` model in the `task` tab (or endpoint); None when it fits."""
    if head == task or head not in HEAD_WORDS:
        return None
    if head in TASKS:
        return f"'{name}' is {HEAD_WORDS[head]} model: use " + (
            f"the {ENDPOINTS[head]} endpoint." if api else f"the {TAB_NAMES[head]} tab.")
    here = f"the {ENDPOINTS[task]} endpoint" if api else f"the {TAB_NAMES[task]} tab"
    return f"'{name}' is {HEAD_WORDS[head]} model; {here} needs {HEAD_WORDS[task]} model."


def refuse_other_head(name: str, head: str | None, task: str, api: bool = False) -> None:
    """RplnError naming the right tab (or endpoint) when `head` is another task's."""
    message = wrong_head_message(name, head, task, api) if head else None
    if message:
        raise RplnError(message)


# What happens past the limit, as each tab's engine call handles it.
PAST_THE_LIMIT = {
    "fill-mask": "keep every <mask> within them",
    "classification": "a longer text is cut to its first {n}",
    "qa": "a longer context is read in overlapping windows",
    "token-classification": "a longer text is cut to its first {n}",
    "multiple-choice": "a longer context and choice are cut to their first {n} together",
    "causal-lm": "the prompt and what is generated share them",
}


def token_limit_note(name: str, task: str) -> str | None:
    """A line for the text box of a model that reads (or learned) fewer than 512 tokens; None for the others."""
    if not isinstance(name, str) or not name.strip():
        return None
    fact = model_facts(name.strip())
    limit = fact.max_tokens
    if limit is not None and limit < LONG_ENOUGH:
        words = int(limit * WORDS_PER_TOKEN / 10) * 10
        return f"{fact.short_name} reads at most {limit} tokens (about {words} words): " + PAST_THE_LIMIT[
            task
        ].format(n=limit) + "."
    trained = fact.card.trained_tokens if fact.card is not None else None
    if trained is not None and trained < (limit or LONG_ENOUGH):
        return (f"{fact.short_name} was trained on {trained}-token sequences: it reads more, but past {trained} "
                "tokens it reads positions it never learned.")
    return None
