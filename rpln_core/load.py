"""Loading a RoBERTa or RoBERTa-PreLayerNorm checkpoint: bundled name, local directory or Hub id.

One checkpoint is loaded once, as the architecture it was saved with, with eager attention so that
attention weights exist; every task of that checkpoint runs on this one backbone.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from . import synthetic
from .catalog import BUNDLED_DIR, HUB_PRESETS, bundled_models  # noqa: F401 - re-exported
from .errors import RplnError

Architecture = Literal["pre-ln", "post-ln"]
Task = Literal["mlm", "classification", "qa", "base"]

MODEL_TYPES: dict[str, Architecture] = {"roberta-prelayernorm": "pre-ln", "roberta": "post-ln"}

# Only these heads are understood; anything else (causal LM, token classification, ...) is refused.
ARCHITECTURE_TASKS: dict[str, Task] = {
    "ForMaskedLM": "mlm",
    "ForSequenceClassification": "classification",
    "ForQuestionAnswering": "qa",
    "Model": "base",
}
TASK_SUFFIX = {task: suffix for suffix, task in ARCHITECTURE_TASKS.items()}
CLASS_PREFIX: dict[Architecture, str] = {"pre-ln": "RobertaPreLayerNorm", "post-ln": "Roberta"}

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
HUB_REACH_TIMEOUT_S = 3.0


@dataclass
class LoadedModel:
    """A checkpoint ready to run: the HF model in eval mode, its tokenizer and what it is."""

    name: str
    source: Literal["bundled", "local", "hub"]
    architecture: Architecture
    task: Task
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    missing_weights: tuple[str, ...] = ()  # parameters the checkpoint lacked, so they hold random init
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

    def head_is_trained(self, head: str) -> bool:
        """Whether the checkpoint has the weights of `head` ("lm_head", "classifier", "qa_outputs")."""
        if getattr(self.model, head, None) is None:
            return False
        return not any(key.startswith(head + ".") for key in self.missing_weights)

    @property
    def max_tokens(self) -> int:
        """Longest input, special tokens included: RoBERTa positions start after the padding index."""
        return self.config.max_position_embeddings - self.config.pad_token_id - 1

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers


def load_model(name_or_path: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a bundled model by name, a local checkpoint directory, or a Hugging Face Hub id."""
    name = (name_or_path or "").strip()
    if not name:
        raise RplnError(f"No model given. Bundled models: {_bundled_list()}.")
    if name in bundled_models():
        return load_directory(BUNDLED_DIR / name, name=name, source="bundled", device=device, dtype=dtype)
    path = Path(name).expanduser()
    if path.is_dir():
        return load_directory(path, name=name, source="local", device=device, dtype=dtype)
    if path.is_absolute() or name.startswith((".", "~")) or not HUB_ID.match(name):
        raise RplnError(f"'{name}' is neither a bundled model ({_bundled_list()}), a checkpoint directory, nor a Hub id.")
    return load_directory(download_from_hub(name), name=name, source="hub", device=device, dtype=dtype)


def load_directory(
    directory: Path, *, name: str, source: str, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedModel:
    """Load a checkpoint directory after checking that it is a RoBERTa model we understand."""
    architecture, task = read_architecture(directory)
    model_class = getattr(__import__("transformers"), CLASS_PREFIX[architecture] + TASK_SUFFIX[task])
    has_safetensors = any(directory.glob("*.safetensors"))
    hf_logging.disable_progress_bar()  # a server log is no place for per-load progress bars
    try:
        model, loading_info = model_class.from_pretrained(
            directory,
            output_loading_info=True,
            attn_implementation="eager",  # sdpa returns no attention weights: the explorer needs them
            dtype=dtype,
            use_safetensors=has_safetensors,
            trust_remote_code=False,
        )
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError) as error:
        raise RplnError(f"Could not load '{name}': {error}") from error
    if len(tokenizer) < 10 or tokenizer.mask_token_id is None:
        raise RplnError(f"'{name}' has no usable RoBERTa tokenizer (vocabulary of {len(tokenizer)} tokens).")
    missing = tuple(loading_info.get("missing_keys", ()))
    return LoadedModel(name, source, architecture, task, model.to(device).eval(), tokenizer, missing)


def read_architecture(directory: Path) -> tuple[Architecture, Task]:
    """Which LayerNorm placement and which head a checkpoint has, from its config.json alone."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise RplnError(f"'{directory}' has no config.json: it is not a transformers checkpoint.")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RplnError(f"'{config_file}' is not readable JSON: {error}") from error
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise RplnError(
            f"'{directory.name}' is a '{model_type}' model; PreLN Explorer needs RoBERTa or RoBERTa-PreLayerNorm."
        )
    architecture = MODEL_TYPES[model_type]
    prefix = CLASS_PREFIX[architecture]
    for class_name in config.get("architectures") or [prefix + "ForMaskedLM"]:
        suffix = class_name.removeprefix(prefix)
        if class_name.startswith(prefix) and suffix in ARCHITECTURE_TASKS:
            return architecture, ARCHITECTURE_TASKS[suffix]
    raise RplnError(
        f"'{directory.name}' has head {config.get('architectures')}; supported: masked LM, "
        "sequence classification, question answering."
    )


def download_from_hub(repo_id: str) -> Path:
    """Fetch a checkpoint's config, weights and tokenizer from the Hub (or its local cache)."""
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline and not hub_reachable():
        # huggingface_hub retries for ~20 s before giving up; a quick probe answers at once.
        offline = True
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=offline))
        if not any(folder.glob("*.safetensors")):
            # Older checkpoints ship only pickled weights; transformers reads them with weights_only=True.
            folder = Path(snapshot_download(repo_id, allow_patterns=["pytorch_model.bin"], local_files_only=offline))
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
    """A freshly initialised model wrapped like a loaded one: for tests, benchmarks and init experiments."""
    config = synthetic.build_config(architecture, len(tokenizer), **config_kwargs)
    model = synthetic.build_model(architecture, task, config, seed=seed)
    return LoadedModel(f"random {architecture} (seed {seed})", "local", architecture, task, model, tokenizer)


def _bundled_list() -> str:
    return ", ".join(bundled_models()) or "none installed"
