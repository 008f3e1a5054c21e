"""Which models exist without downloading anything, and what is known about how each was trained.

`bundled_models()` lists the models shipped under models/; `HUB_PRESETS` are the Hub checkpoints the app offers.
`model_card(name)` tells what a config.json cannot: the sequence length a model was trained on, its masking
recipe and its source, so that a task can say when an input runs past what the model learned.

Kept free of torch and transformers so that the app can list models before those are imported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

# The clone's models/ folder (a checkout or an editable install); RPLN_BUNDLED_DIR points a `pip install .` copy,
# which holds only the code, at a folder of checkpoints.
BUNDLED_DIR = Path(os.environ.get("RPLN_BUNDLED_DIR") or Path(__file__).resolve().parent.parent / "models")

# The seven classes transformers defines on the encoder, by class suffix (the same for both placements), and the task
# each one's head runs (rpln_core.load.Task); any other head is refused. "Model" (no head) is last, as every class
# name ends so. Here rather than in load.py so that the app's pickers read it without importing torch.
ARCHITECTURE_TASKS = {
    "ForMaskedLM": "mlm",
    "ForSequenceClassification": "classification",
    "ForQuestionAnswering": "qa",
    "ForTokenClassification": "token-classification",
    "ForMultipleChoice": "multiple-choice",
    "ForCausalLM": "causal-lm",
    "Model": "base",
}

WETTIG_2023 = (
    'Wettig, Gao, Zhong & Chen (2023), "Should You Mask 15% in Masked Language Modeling?", EACL 2023 '
    "(arXiv:2202.08005); trained with DinkyTrain (fairseq), converted to transformers by Andreas Madsen"
)
LIU_2019 = 'Liu et al. (2019), "RoBERTa: A Robustly Optimized BERT Pretraining Approach" (arXiv:1907.11692)'
BUNDLED_SOURCE = "PreLN Explorer's own training (models/README.md)"


@dataclass(frozen=True)
class ModelCard:
    """What is known about one model beyond its config.json. Sizes are the published ones, for reading only."""

    name: str  # a Hub id or a bundled model's name, as `load_model` is given it
    architecture: str  # "pre-ln" or "post-ln"
    layers: int
    hidden: int
    heads: int
    parameters_millions: float  # with its pre-training head, as published (rounded)
    # Tokens per pre-training sequence, <s> and </s> included. Position embeddings past it were never (or hardly
    # ever) trained even when max_position_embeddings allows more: efficient_mlm has 514 positions, learned 128.
    trained_tokens: int
    masking_rate: float  # share of tokens the MLM loss predicted
    # 80/10/10: a tenth of the predicted tokens stayed visible, so the model also learned to predict a token it
    # sees (what the logit lens reads at unmasked positions). 100% <mask> (efficient_mlm's SAME_RATE=0,
    # RANDOM_RATE=0): only hidden tokens were ever predicted, so its outputs at visible tokens were never trained.
    trained_on_visible_tokens: bool
    source: str
    preset: bool = False  # offered in the app's model picker (HUB_PRESETS)

    @property
    def short_name(self) -> str:
        """The name without its Hub organisation, as a sentence reads it."""
        return self.name.rsplit("/", 1)[-1]

    def length_notice(self, tokens: int) -> str | None:
        """A sentence for an input of `tokens` tokens that runs past the trained length; None when it does not."""
        beyond = tokens - self.trained_tokens
        if beyond <= 0:
            return None
        return (
            f"{self.short_name} was trained on {self.trained_tokens}-token sequences; tokens beyond "
            f"{self.trained_tokens} (here {beyond} of them) are outside what it learned."
        )


def _efficient_mlm(rate: str, *, preset: bool, visible: bool) -> ModelCard:
    # RoBERTa-large's shape with a final LayerNorm; DinkyTrain's TOKENS_PER_SAMPLE=128.
    suffix = "" if preset else "-801010"
    return ModelCard(
        f"andreasmadsen/efficient_mlm_m0.{rate}{suffix}", "pre-ln", 24, 1024, 16, 355, 128, int(rate) / 100,
        visible, WETTIG_2023, preset,
    )


def _bundled(name: str, architecture: str, parameters_millions: float) -> ModelCard:
    # models/README.md: 4 layers, 256 wide, 4 heads; blocks of 128 tokens, 15% masking, 80/10/10.
    return ModelCard(name, architecture, 4, 256, 4, parameters_millions, 128, 0.15, True, BUNDLED_SOURCE)


EFFICIENT_MLM_RATES = ("15", "20", "30", "40", "50", "60", "70", "80")

CARDS: list[ModelCard] = [
    # The eight public pre-LN checkpoints of Wettig et al. (2023), and the post-LN models to compare them with.
    *(_efficient_mlm(rate, preset=True, visible=False) for rate in EFFICIENT_MLM_RATES),
    ModelCard("FacebookAI/roberta-base", "post-ln", 12, 768, 12, 125, 512, 0.15, True, LIU_2019, preset=True),
    ModelCard("FacebookAI/roberta-large", "post-ln", 24, 1024, 16, 355, 512, 0.15, True, LIU_2019, preset=True),
    # The paper's controls with BERT's 80/10/10 replacement; on the Hub, not in the picker.
    *(_efficient_mlm(rate, preset=False, visible=True) for rate in ("15", "40")),
    _bundled("preln-mini", "pre-ln", 5.4),
    _bundled("postln-mini", "post-ln", 5.4),
    _bundled("preln-mini-sentiment", "pre-ln", 5.4),  # fine-tuned from preln-mini on sentences cut to 128 tokens
    _bundled("preln-mini-qa", "pre-ln", 5.3),  # fine-tuned from preln-mini on 128-token windows
    # deltas over preln-mini (models/README.md): low-rank updates of its layers plus a new head
    _bundled("preln-mini-pos", "pre-ln", 5.3),
    _bundled("preln-mini-choice", "pre-ln", 5.4),
    _bundled("preln-mini-causal", "pre-ln", 5.4),
]

HUB_PRESETS = [card.name for card in CARDS if card.preset]

# Older Hub ids that still resolve to the same repositories.
ALIASES = {"roberta-base": "FacebookAI/roberta-base", "roberta-large": "FacebookAI/roberta-large"}

_BY_NAME = {card.name.lower(): card for card in CARDS}


def model_card(name: str) -> ModelCard | None:
    """The card of a model loaded as `name` (a Hub id, an old alias, or a bundled name); None when unknown.

    Hub ids match whatever their case, as the Hub resolves them. A local directory is never matched: its name
    says nothing reliable about what it holds.
    """
    key = (name or "").strip()
    key = ALIASES.get(key, key).lower()
    return _BY_NAME.get(key)


# A bundled model is a from_pretrained directory (config.json), or a small delta over another bundled model
# (delta.json holding the whole config; rpln_core.deltas builds the checkpoint): models/ must stay small.
CHECKPOINT_CONFIG, DELTA_MANIFEST = "config.json", "delta.json"


def bundled_models() -> list[str]:
    """Names of the models shipped under models/: checkpoint directories and deltas over one of them."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(
        p.name for p in BUNDLED_DIR.iterdir() if (p / CHECKPOINT_CONFIG).is_file() or (p / DELTA_MANIFEST).is_file()
    )


def checkpoint_config(directory: Path) -> dict | None:
    """The config of the model in `directory` (a checkpoint's config.json, or the one a delta's manifest holds),
    read without torch; None when neither file is there or readable as JSON."""
    try:
        if (directory / CHECKPOINT_CONFIG).is_file():
            return json.loads((directory / CHECKPOINT_CONFIG).read_text(encoding="utf-8"))
        if (directory / DELTA_MANIFEST).is_file():
            return json.loads((directory / DELTA_MANIFEST).read_text(encoding="utf-8")).get("config")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return None
