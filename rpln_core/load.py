"""Loading a RoBERTa or RoBERTa-PreLayerNorm checkpoint: bundled name, local directory or Hub id.

One checkpoint is loaded once, as the architecture it was saved with, with eager attention so that
attention weights exist; every task of that checkpoint runs on this one backbone.

A checkpoint loads only whole and readable: a missing embedding or encoder weight, weights of another shape, a Git
LFS pointer or a damaged file in place of the weights are refused with a message that names the cause. Only a
missing head is let through (the encoder is still worth looking inside); tasks refuse to use it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Literal
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from . import deltas, synthetic
from .building import BUILDING_MODELS
from .catalog import ARCHITECTURE_TASKS, BUNDLED_DIR, HUB_PRESETS, bundled_models  # noqa: F401 - re-exported
from .errors import RplnError

Architecture = Literal["pre-ln", "post-ln"]
Task = Literal["mlm", "classification", "qa", "token-classification", "multiple-choice", "causal-lm", "base"]

MODEL_TYPES: dict[str, Architecture] = {"roberta-prelayernorm": "pre-ln", "roberta": "post-ln"}

# The task of each head class, by suffix: ARCHITECTURE_TASKS, from catalog.py (torch-free, for the app's pickers).
TASK_SUFFIX = {task: suffix for suffix, task in ARCHITECTURE_TASKS.items()}
CLASS_PREFIX: dict[Architecture, str] = {"pre-ln": "RobertaPreLayerNorm", "post-ln": "Roberta"}

# The modules that make each task's head, as paths in the model ("pooler" is in the encoder: `<body>.pooler`). A head is
# known by the checkpoint's task, never by its attribute name alone: sequence and token classification both call
# theirs `classifier` (a token classifier is one Linear read at every position), masked and causal LM both `lm_head`.
# Multiple choice reads the pooler too, which every other task leaves unused.
TASK_HEAD_MODULES: dict[Task, tuple[str, ...]] = {
    "mlm": ("lm_head",),
    "classification": ("classifier",),
    "qa": ("qa_outputs",),
    "token-classification": ("classifier",),
    "multiple-choice": ("pooler", "classifier"),
    "causal-lm": ("lm_head",),
    "base": (),
}

# How messages and docs name each task, and the engine function that runs it.
TASK_WORDS: dict[Task, str] = {
    "mlm": "fill-mask",
    "classification": "classification",
    "qa": "question answering",
    "token-classification": "token classification",
    "multiple-choice": "multiple choice",
    "causal-lm": "text generation",
    "base": "bare encoder",
}
TASK_FUNCTIONS: dict[Task, str] = {
    "mlm": "fill_mask",
    "classification": "classify",
    "qa": "answer",
    "token-classification": "tag",
    "multiple-choice": "choose",
    "causal-lm": "generate",
}

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$")
HUB_FILES = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
]
# Older checkpoints (the efficient_mlm repos' main branch among them) hold only pickled PyTorch weights next to
# TensorFlow ones; transformers reads these with torch.load(weights_only=True), so no pickled code runs.
HUB_PICKLED_WEIGHTS = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]
HUB_REACH_TIMEOUT_S = 3.0

WeightFormat = Literal["safetensors", "bin"]
# The files transformers reads, per format, in the order it prefers them: one file, or shards named by an index.
WEIGHT_FILES: dict[WeightFormat, tuple[str, str]] = {
    "safetensors": ("model.safetensors", "model.safetensors.index.json"),
    "bin": ("pytorch_model.bin", "pytorch_model.bin.index.json"),
}
# A clone made without Git LFS holds, instead of each large file, a ~130-byte text file starting like this.
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
LFS_POINTER_MAX_BYTES = 1024


@dataclass
class LoadedModel:
    """A checkpoint ready to run: the HF model in eval mode, its tokenizer and what it is."""

    name: str
    source: Literal["bundled", "local", "hub"]
    architecture: Architecture
    task: Task
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    # Parameters the checkpoint lacked, so they hold random init. Only a head's (or the pooler's, which only multiple
    # choice reads): a checkpoint missing any embedding or encoder weight is refused at load.
    missing_weights: tuple[str, ...] = ()
    # What a reader should know about how the checkpoint was loaded (e.g. a causal LM whose config.json did not say
    # it is a decoder); every task result repeats them.
    notices: tuple[str, ...] = ()
    # Held by every pass through `model`: capture and ablation hooks sit on the shared modules, so a second pass
    # running meanwhile would fire them (or be changed by them). Re-entrant: an ablation runs captured passes.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def config(self):
        return self.model.config

    @cached_property
    def body(self) -> nn.Module:
        """The encoder shared by every task: embeddings, layers and (pre-LN) the final LayerNorm."""
        return self.model if self.task == "base" else getattr(self.model, self.model.base_model_prefix)

    @property
    def lm_head(self) -> nn.Module | None:
        return getattr(self.model, "lm_head", None)

    @property
    def classifier(self) -> nn.Module | None:
        return getattr(self.model, "classifier", None)

    @property
    def qa_outputs(self) -> nn.Module | None:
        return getattr(self.model, "qa_outputs", None)

    @property
    def pooler(self) -> nn.Module | None:
        """The encoder's pooler (dense + tanh on <s>): only the multiple-choice head reads it."""
        return getattr(self.body, "pooler", None)

    def head_is_trained(self, head: str) -> bool:
        """Whether the checkpoint has the weights of `head` ("lm_head", "classifier", "qa_outputs", "pooler").

        Says nothing of what the head was trained for: see `has_trained_head(task)`."""
        if head == "pooler":
            if self.pooler is None:
                return False
            path = "pooler" if self.task == "base" else f"{self.model.base_model_prefix}.pooler"
        else:
            if getattr(self.model, head, None) is None:
                return False
            path = head
        return not any(key.startswith(path + ".") for key in self.missing_weights)

    def has_trained_head(self, task: Task) -> bool:
        """Whether this checkpoint was saved for `task` with every weight of that task's head."""
        return self.task == task and all(self.head_is_trained(head) for head in TASK_HEAD_MODULES[task])

    @property
    def max_tokens(self) -> int:
        """Longest input, special tokens included: RoBERTa positions start after the padding index."""
        return self.config.max_position_embeddings - self.config.pad_token_id - 1

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers


def load_model(name_or_path: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a bundled model by name, a local checkpoint directory, or a Hugging Face Hub id.

    `dtype` may be torch.bfloat16 or torch.float16 as well: every task then runs in it (see tasks/common.py).
    Messages name the model as typed (`~/ckpt`, not the path it resolves to)."""
    name = (name_or_path or "").strip()
    if not name:
        raise RplnError(f"No model given. Bundled models: {_bundled_list()}.")
    if name in bundled_models():
        return load_directory(checkpoint_of(BUNDLED_DIR / name), name=name, source="bundled", device=device,
                              dtype=dtype)
    path = Path(name).expanduser()
    if path.is_dir():
        return load_directory(checkpoint_of(path), name=name, source="local", device=device, dtype=dtype)
    if path.is_absolute() or name.startswith((".", "~")) or not HUB_ID.match(name):
        raise RplnError(
            f"'{name}' is neither a bundled model ({_bundled_list()}), a checkpoint directory, nor a Hub id."
        )
    return load_directory(download_from_hub(name), name=name, source="hub", device=device, dtype=dtype)


def checkpoint_of(directory: Path) -> Path:
    """`directory` itself, or for a delta (rpln_core.deltas) the checkpoint it makes over its base: written once to
    a cache folder keyed by both hashes, and read from there as any checkpoint."""
    if not deltas.is_delta_dir(directory):
        return directory
    try:
        return deltas.materialise(directory)
    except OSError as error:  # e.g. a read-only home on a hosted app
        raise RplnError(
            f"Could not write the checkpoint of '{directory.name}' to its cache folder ({error.strerror or error}): "
            f"set {deltas.CACHE_ENV} to a writable folder."
        ) from error


def load_directory(
    directory: Path, *, name: str, source: str, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedModel:
    """Load a checkpoint directory after checking that it is a RoBERTa model we understand, whole and readable.

    `name` is how the user called it; messages use it, never `directory` (a resolved path or a cache folder)."""
    architecture, task = read_architecture(directory, name)
    weights = find_weights(directory, name)
    check_weights_readable(weights, name)
    model_class = getattr(__import__("transformers"), CLASS_PREFIX[architecture] + TASK_SUFFIX[task])
    overrides, notices = decoder_settings(directory, name, task)
    hf_logging.disable_progress_bar()  # a server log is no place for per-load progress bars
    try:
        with BUILDING_MODELS:
            model, loading_info = model_class.from_pretrained(
                directory,
                **overrides,
                output_loading_info=True,
                attn_implementation="eager",  # sdpa returns no attention weights: the explorer needs them
                dtype=dtype,
                use_safetensors=weights.format == "safetensors",
                # Report wrong shapes instead of raising "see the report above": check_complete names them.
                ignore_mismatched_sizes=True,
                trust_remote_code=False,
            )
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except SafetensorError as error:  # the header check passed, but reading a tensor failed
        raise RplnError(unreadable_safetensors(name, weights.files[0].name, error)) from error
    except (pickle.UnpicklingError, EOFError) as error:
        raise RplnError(unreadable_pickle(name, weights.files[0].name)) from error
    except (OSError, ValueError, RuntimeError) as error:
        if weights.format == "bin" and "PytorchStreamReader" in str(error):
            raise RplnError(unreadable_pickle(name, weights.files[0].name)) from error
        raise RplnError(f"Could not load '{name}': {without_paths(str(error), directory, name)}") from error
    missing = check_complete(model, loading_info, name)
    check_tokenizer(tokenizer, model.config.vocab_size, name)
    return LoadedModel(name, source, architecture, task, model.to(device).eval(), tokenizer, missing, notices)


def decoder_settings(directory: Path, name: str, task: Task) -> tuple[dict, tuple[str, ...]]:
    """Config overrides for `from_pretrained`, and notices: a causal LM always runs as a decoder.

    transformers builds a ...ForCausalLM whose config lacks `is_decoder=True` with bidirectional attention (it only
    warns), so each position would see the tokens after it and generation would not be what the head was trained
    for. Such a config is read as the class name says, with a notice; other tasks load as saved."""
    if task != "causal-lm":
        return {}, ()
    if json.loads((directory / "config.json").read_text()).get("is_decoder") is True:
        return {}, ()
    return {"is_decoder": True}, (
        f"The config.json of '{name}' does not set is_decoder=true, yet names a causal LM head: it was loaded as a "
        "decoder (each position attends only to itself and earlier positions), as transformers asks for "
        "standalone use. Add \"is_decoder\": true to its config.json to say so.",
    )


def read_architecture(directory: Path, name: str | None = None) -> tuple[Architecture, Task]:
    """Which LayerNorm placement and which head a checkpoint has, from its config.json alone.

    `name`: how messages call the checkpoint (default: the directory's own name)."""
    name = name if name is not None else directory.name
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise RplnError(f"'{name}' has no config.json: it is not a transformers checkpoint.")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RplnError(
            f"The config.json of '{name}' is not readable JSON ({type(error).__name__}): the file is damaged."
        ) from error
    if not isinstance(config, dict):
        raise RplnError(f"The config.json of '{name}' is not a transformers config (it holds no settings object).")
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise RplnError(f"'{name}' is a '{model_type}' model; PreLN Explorer needs RoBERTa or RoBERTa-PreLayerNorm.")
    architecture = MODEL_TYPES[model_type]
    prefix = CLASS_PREFIX[architecture]
    for class_name in config.get("architectures") or [prefix + "ForMaskedLM"]:
        suffix = class_name.removeprefix(prefix)
        if class_name.startswith(prefix) and suffix in ARCHITECTURE_TASKS:
            return architecture, ARCHITECTURE_TASKS[suffix]
    raise RplnError(
        f"'{name}' has head {config.get('architectures')}; supported: masked LM, "
        "sequence classification, question answering, token classification, multiple choice, causal LM "
        f"({', '.join(prefix + suffix for suffix in ARCHITECTURE_TASKS)})."
    )


@dataclass
class WeightFiles:
    """The weight files transformers will read from a checkpoint directory, in one format."""

    format: WeightFormat
    files: list[Path]  # one file, or every shard an index names


def find_weights(directory: Path, name: str) -> WeightFiles:
    """The weights transformers would read (safetensors first, as it does), or a refusal saying none are there."""
    for weight_format, (single, index) in WEIGHT_FILES.items():
        if (directory / single).is_file():
            return WeightFiles(weight_format, [directory / single])
        if (directory / index).is_file():
            return WeightFiles(weight_format, shards_of(directory, index, name))
    raise RplnError(
        f"'{name}' has no weights: it holds neither model.safetensors nor pytorch_model.bin (nor a sharded index of "
        "either); TensorFlow and Flax weights are not read. Download the checkpoint's PyTorch weights."
    )


def shards_of(directory: Path, index: str, name: str) -> list[Path]:
    """The shard files named by a sharded checkpoint's index, each of which must be there."""
    try:
        weight_map = json.loads((directory / index).read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise RplnError(
            f"The {index} of '{name}' is not a readable index of weight shards: the file is damaged."
        ) from error
    absent = [shard for shard in shards if not (directory / shard).is_file()]
    if absent:
        raise RplnError(
            f"'{name}' lacks {len(absent)} of the {len(shards)} weight files its {index} lists "
            f"(e.g. {absent[0]}): the download is incomplete. Download the checkpoint again."
        )
    return [directory / shard for shard in shards]


def check_weights_readable(weights: WeightFiles, name: str) -> None:
    """Refuse Git LFS pointers in place of weights, and safetensors files whose header cannot be read.

    Pickled .bin files are only checked for LFS pointers here: reading them is torch.load's job (weights_only)."""
    for file in weights.files:
        if is_lfs_pointer(file):
            raise RplnError(
                f"'{name}': {file.name} is a Git LFS pointer (a small text file standing in for the weights), "
                "so the weights were not fetched. Run `git lfs pull` in the checkpoint's folder "
                "(or clone it with Git LFS installed), then load it again."
            )
        if weights.format == "safetensors":
            try:
                with safe_open(file, framework="pt") as reader:
                    reader.keys()  # parses the header: a truncated or foreign file fails here
            except SafetensorError as error:
                raise RplnError(unreadable_safetensors(name, file.name, error)) from error


def is_lfs_pointer(file: Path) -> bool:
    """Whether `file` is a Git LFS pointer file rather than the content it points to."""
    try:
        if file.stat().st_size > LFS_POINTER_MAX_BYTES:
            return False
        with open(file, "rb") as handle:
            return handle.read(len(LFS_POINTER)) == LFS_POINTER
    except OSError:
        return False  # unreadable: from_pretrained reports it


def unreadable_safetensors(name: str, file_name: str, error: Exception) -> str:
    return (
        f"'{name}': {file_name} is not readable safetensors ({error}): the file is damaged or was not completely "
        "downloaded. Download the checkpoint again."
    )


def unreadable_pickle(name: str, file_name: str) -> str:
    return (
        f"'{name}': {file_name} is not readable as plain PyTorch weights: the file is damaged or incomplete, or "
        "it holds pickled objects besides tensors, which PreLN Explorer never runs (it loads with "
        "weights_only=True). Download it again, or convert it to safetensors if you trust its source."
    )


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, vocab_size: int, name: str) -> None:
    """Refuse a tokenizer that is not RoBERTa's kind, or that has ids the model has no embedding for."""
    if len(tokenizer) < 10 or tokenizer.mask_token_id is None:
        raise RplnError(f"'{name}' has no usable RoBERTa tokenizer (vocabulary of {len(tokenizer)} tokens).")
    if len(tokenizer) > vocab_size:
        # Otherwise the first token past the embeddings fails deep in the forward with "index out of range".
        raise RplnError(
            f"'{name}' has a tokenizer of {len(tokenizer)} tokens but embeddings for only {vocab_size}: the "
            "tokenizer files and the weights come from different models."
        )


def check_complete(model: PreTrainedModel, loading_info: dict, name: str) -> tuple[str, ...]:
    """Refuse a model whose weights do not fit its config or lack any part of the encoder; return what is missing.

    A missing head is let through (the encoder is still worth looking inside): `require_head` refuses to
    present its output. Returns the missing parameter names, which then belong to a head or the pooler."""
    mismatched = sorted(loading_info.get("mismatched_keys") or ())
    if mismatched:
        raise RplnError(shape_mismatch_message(name, mismatched))
    missing = tuple(sorted(loading_info.get("missing_keys") or ()))
    base = model.base_model_prefix
    prefix = base + "." if base and hasattr(model, base) else ""  # a bare encoder's keys have no prefix
    body_parts = [body_part(key, prefix) for key in missing]
    body_missing = [part for part in body_parts if part is not None]
    if not body_missing:
        return missing
    expected = [part for part in (body_part(key, prefix) for key in model.state_dict()) if part is not None]
    if len(body_missing) >= len(expected):
        raise RplnError(no_encoder_message(name, model, loading_info.get("unexpected_keys") or ()))
    layers = any(part.startswith("layer") for part in body_missing)
    numbering = " Layers count from 0, as in the weight names (encoder.layer.N)." if layers else ""
    raise RplnError(
        f"'{name}' lacks the weights of {summarise_parts(body_missing)}, so the model would run with random values "
        f"there: the checkpoint is incomplete. Download or save the whole checkpoint again.{numbering}"
    )


def body_part(key: str, prefix: str) -> str | None:
    """Which part of the encoder parameter `key` belongs to ("embeddings", "layer 3", "final LayerNorm"); None
    for a head or the pooler, which only multiple choice reads."""
    if not key.startswith(prefix):
        return None
    key = key[len(prefix) :]
    if key.startswith("embeddings."):
        return "embeddings"
    match = re.match(r"encoder\.layer\.(\d+)\.", key)
    if match:
        return f"layer {int(match.group(1))}"
    if key.startswith("LayerNorm."):
        return "final LayerNorm"  # pre-LN only
    if key.startswith("encoder."):
        return "encoder"
    return None


def summarise_parts(parts: Iterable[str]) -> str:
    """E.g. "the embeddings (2 tensors) and layers 1–2 (32 tensors)": runs of layers merged, tensors counted."""
    counts = Counter(parts)
    layers = sorted(int(part.split()[1]) for part in counts if part.startswith("layer "))
    pieces = [f"the embeddings ({_tensors(counts['embeddings'])})"] if "embeddings" in counts else []
    for first, last in _runs(layers):
        tensors = sum(counts[f"layer {i}"] for i in range(first, last + 1))
        span = f"layer {first}" if first == last else f"layers {first}–{last}"
        pieces.append(f"{span} ({_tensors(tensors)})")
    for part in ("final LayerNorm", "encoder"):
        if part in counts:
            pieces.append(f"the {part} ({_tensors(counts[part])})")
    return pieces[0] if len(pieces) == 1 else ", ".join(pieces[:-1]) + " and " + pieces[-1]


def no_encoder_message(name: str, model: PreTrainedModel, unexpected: Iterable[str]) -> str:
    """Why a checkpoint holds none of the encoder's weights: other names (another architecture), or nothing."""
    unexpected = sorted(unexpected)
    expected = type(model).__name__
    if unexpected:
        return (
            f"'{name}' holds none of the weights a {expected} reads, which its config.json asks for: the weight "
            f"file names its {len(unexpected)} tensors differently (e.g. '{unexpected[0]}'). The config.json and "
            "the weights come from different models; put the matching config.json next to them."
        )
    return (
        f"'{name}' holds none of the encoder's weights (the embeddings and every layer are missing): its weight file "
        "has at most a task head. Download or save the whole checkpoint."
    )


def shape_mismatch_message(name: str, mismatched: list) -> str:
    key, in_file, in_model = mismatched[0]
    return (
        f"'{name}': its weights do not fit its config.json: {key} is {_shape(in_file)} in the weight file but "
        f"{_shape(in_model)} in the model the config describes ({_differ(len(mismatched))}). The config.json "
        "and the weights come from different models (another size or vocabulary)."
    )


def without_paths(text: str, directory: Path, name: str) -> str:
    """`text` with the checkpoint's resolved or cached path replaced by the name the user typed."""
    for path in sorted({str(directory.resolve()), str(directory.absolute()), str(directory)}, key=len, reverse=True):
        if path not in ("", "."):
            text = text.replace(path, name)
    return text


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted `numbers`: [0, 1, 2, 5] -> [(0, 2), (5, 5)]."""
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def _tensors(count: int) -> str:
    return f"{count} tensor" if count == 1 else f"{count} tensors"


def _differ(count: int) -> str:
    return "1 tensor differs" if count == 1 else f"{count} tensors differ"


def _shape(shape) -> str:
    return "×".join(str(int(n)) for n in shape)


def download_from_hub(repo_id: str) -> Path:
    """Fetch a checkpoint's config, tokenizer and weights from the Hub (or its local cache).

    Weights: the main branch's safetensors, else its pickled PyTorch weights (the efficient_mlm repos hold only
    pytorch_model.bin and tf_model.h5 there); TensorFlow and Flax files are never fetched."""
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline and not hub_reachable():
        # huggingface_hub retries for ~20 s before giving up; a quick probe answers at once.
        offline = True
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=offline))
        if not any(folder.glob("*.safetensors")):
            # Only then the pickled weights: a repo with both would otherwise cost two downloads of the model.
            folder = Path(snapshot_download(repo_id, allow_patterns=HUB_PICKLED_WEIGHTS, local_files_only=offline))
    except Exception as error:  # the hub client raises many unrelated types for "not there"
        where = "is not in the local cache and the Hub cannot be reached" if offline else "could not be downloaded"
        raise RplnError(
            f"'{repo_id}' {where} ({type(error).__name__}). Bundled models that work offline: {_bundled_list()}."
        ) from error
    return folder


def hub_reachable(timeout: float = HUB_REACH_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub's host opens within `timeout` seconds."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def random_model(architecture: Architecture, task: Task, tokenizer, seed: int = 0, **config_kwargs) -> LoadedModel:
    """A freshly initialised model wrapped like a loaded one: for tests, benchmarks and init experiments.

    Any task of ARCHITECTURE_TASKS; a causal LM is built as a decoder (synthetic.build_model)."""
    config = synthetic.build_config(architecture, len(tokenizer), **config_kwargs)
    model = synthetic.build_model(architecture, task, config, seed=seed)
    return LoadedModel(f"random {architecture} (seed {seed})", "local", architecture, task, model, tokenizer)


def _bundled_list() -> str:
    return ", ".join(bundled_models()) or "none installed"
