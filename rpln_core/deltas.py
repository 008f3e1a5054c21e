"""Bundled models shipped as a small delta over a bundled base model, and how to turn one back into a checkpoint.

A delta directory (`models/<name>/`) holds two files and nothing else is needed besides its base:

- `delta.json`, the manifest:
  `format` ("rpln-delta"), `version` (1), `base` (the base's folder name, a sibling under the same parent,
  e.g. "preln-mini"), `base_sha256` (SHA-256 of the base's `model.safetensors`: the delta applies to those exact
  bytes only), `weights_sha256` (SHA-256 of `delta.safetensors`), `config` (the whole config.json of the model the
  delta makes, `architectures` included) and `notes` (free-form: how it was trained; never read by the code).
- `delta.safetensors`, fp16 tensors named after the target model's parameters:
  `<param>` is a full tensor that replaces the base's (or adds one the base lacks: a task head, the pooler);
  `<param>.lora_A` [rank, in] and `<param>.lora_B` [out, rank] are a low-rank update,
  `W = W_base + lora_B @ lora_A`, with the LoRA scale (alpha / rank) already folded into `lora_B`.
  Every other parameter is the base's, under the same name; tied parameters (the causal LM's decoder) follow
  their source. A parameter neither in the base nor in the delta is refused, never left at random init.

Merging runs in float32 and rounds each merged weight to fp16, the dtype every bundled model is stored in, so the
model built in memory (`build_model`) and the one read back from a materialised directory are bit-for-bit equal.
`materialise` writes a standard `from_pretrained` directory (config.json, fp16 model.safetensors, the base's
tokenizer files); without `out` it goes to a cache folder keyed by the delta's and the base's hashes, reused on the
next call. One command does it: `python -m rpln_core.deltas materialise models/<name> --out DIR`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .building import BUILDING_MODELS
from .errors import RplnError

FORMAT = "rpln-delta"
VERSION = 1
MANIFEST = "delta.json"
WEIGHTS = "delta.safetensors"
BASE_WEIGHTS = "model.safetensors"
LORA_A, LORA_B = ".lora_A", ".lora_B"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SOURCE_RECORD = "delta_source.json"  # written into a materialised directory: which delta and base made it
# Only these classes are ever instantiated from a manifest: a config cannot name arbitrary code.
ALLOWED_PREFIXES = ("RobertaPreLayerNorm", "Roberta")
ALLOWED_SUFFIXES = (
    "ForMaskedLM",
    "ForSequenceClassification",
    "ForQuestionAnswering",
    "ForTokenClassification",
    "ForMultipleChoice",
    "ForCausalLM",
)
CACHE_ENV = "RPLN_DELTA_CACHE"
STORED_DTYPE = torch.float16


@dataclass(frozen=True)
class DeltaManifest:
    """What `delta.json` holds."""

    base: str
    base_sha256: str
    weights_sha256: str
    config: dict
    notes: dict = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

    @property
    def class_name(self) -> str:
        return (self.config.get("architectures") or [""])[0]


# ---------------------------------------------------------------- reading and checking


def is_delta_dir(path: Path) -> bool:
    """Whether `path` is a delta directory (has delta.json), as opposed to a standard checkpoint."""
    return (Path(path) / MANIFEST).is_file()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(delta_dir: Path) -> DeltaManifest:
    """The manifest of a delta directory, or a refusal naming what is wrong with it."""
    delta_dir = Path(delta_dir)
    path = delta_dir / MANIFEST
    if not path.is_file():
        raise RplnError(f"'{delta_dir.name}' is not a delta directory: it has no {MANIFEST}.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        manifest = DeltaManifest(**raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as error:
        raise RplnError(f"The {MANIFEST} of '{delta_dir.name}' is damaged ({type(error).__name__}).") from error
    if manifest.format != FORMAT or manifest.version != VERSION:
        raise RplnError(
            f"'{delta_dir.name}' is a {manifest.format} v{manifest.version} delta; "
            f"this version reads {FORMAT} v{VERSION}."
        )
    name = manifest.class_name
    if not (name.startswith(ALLOWED_PREFIXES) and name.endswith(ALLOWED_SUFFIXES)):
        raise RplnError(
            f"'{delta_dir.name}' asks for class {name!r}; only RoBERTa (pre-LN or post-LN) heads are built."
        )
    return manifest


def resolve_base(delta_dir: Path, manifest: DeltaManifest, base_dir: Path | None = None) -> Path:
    """The base checkpoint directory (default: the sibling folder the manifest names), checked byte for byte."""
    delta_dir = Path(delta_dir)
    if base_dir is None and Path(manifest.base).name != manifest.base or manifest.base in ("", ".", ".."):
        # a sibling folder's name, never a path: a manifest must not send the loader elsewhere on the disk
        raise RplnError(f"The {MANIFEST} of '{delta_dir.name}' names its base {manifest.base!r}, not a folder name.")
    base = Path(base_dir) if base_dir is not None else delta_dir.resolve().parent / manifest.base
    weights = base / BASE_WEIGHTS
    if not weights.is_file():
        # no path in the message: it may reach a visitor of a public app
        raise RplnError(
            f"'{delta_dir.name}' is a delta over '{manifest.base}', whose {BASE_WEIGHTS} is missing: "
            f"put the base model '{manifest.base}' next to it (both ship in models/)."
        )
    found = file_sha256(weights)
    if found != manifest.base_sha256:
        raise RplnError(
            f"'{delta_dir.name}' was trained over another '{manifest.base}': its {BASE_WEIGHTS} has SHA-256 "
            f"{found[:12]}…, the delta expects {manifest.base_sha256[:12]}…. "
            "A delta applies to its exact base only; "
            f"restore '{manifest.base}' (e.g. from git) or re-train the delta."
        )
    return base


def read_delta_tensors(delta_dir: Path, manifest: DeltaManifest) -> dict[str, torch.Tensor]:
    """The delta's tensors, after checking the file against the manifest's hash."""
    delta_dir = Path(delta_dir)
    path = delta_dir / WEIGHTS
    if not path.is_file():
        raise RplnError(f"'{delta_dir.name}' lacks {WEIGHTS}: the delta directory is incomplete.")
    found = file_sha256(path)
    if found != manifest.weights_sha256:
        raise RplnError(
            f"'{delta_dir.name}': {WEIGHTS} has SHA-256 {found[:12]}…, its {MANIFEST} records "
            f"{manifest.weights_sha256[:12]}…: the file is damaged or was changed. Restore it (e.g. from git)."
        )
    return read_safetensors(path, delta_dir.name)


def read_safetensors(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        with safe_open(path, framework="pt") as reader:
            return {key: reader.get_tensor(key) for key in reader.keys()}
    except SafetensorError as error:
        raise RplnError(f"'{name}': {path.name} is not readable safetensors ({error}).") from error


# ---------------------------------------------------------------- merging


def model_class(manifest: DeltaManifest):
    import transformers

    return getattr(transformers, manifest.class_name)


def make_config(manifest: DeltaManifest):
    from transformers import RobertaConfig, RobertaPreLayerNormConfig

    classes = {"roberta-prelayernorm": RobertaPreLayerNormConfig, "roberta": RobertaConfig}
    model_type = manifest.config.get("model_type")
    if model_type not in classes:
        raise RplnError(f"delta config has model_type {model_type!r}; expected one of {sorted(classes)}")
    return classes[model_type].from_dict({k: v for k, v in manifest.config.items() if k != "model_type"})


def tied_targets(model) -> set[str]:
    """Parameter names that transformers ties to another (e.g. lm_head.decoder.weight -> word embeddings)."""
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    if not model.config.tie_word_embeddings:
        return set()
    return set(tied) if isinstance(tied, Mapping) else set(tied)


def merge_state(
    target: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor], name: str
) -> dict[str, torch.Tensor]:
    """The target's parameters (fp16-exact float32): the base's, replaced or low-rank-updated by the delta.

    `target` maps every parameter the model needs (tied ones excluded) to a tensor of its shape."""
    low_rank = {key[: -len(LORA_A)] for key in delta if key.endswith(LORA_A)}
    full = {key for key in delta if not key.endswith((LORA_A, LORA_B))}
    unknown = sorted((full | low_rank) - set(target))
    unpaired = sorted(key for key in delta if key.endswith(LORA_B) and key[: -len(LORA_B)] not in low_rank)
    if unknown or unpaired:
        raise RplnError(
            f"'{name}': the delta names tensors its model does not have or pairs badly: {(unknown + unpaired)[:3]}"
        )
    merged = {}
    for key, like in target.items():
        if key in full:
            value = delta[key].float()
        elif key in base:
            value = base[key].float()
            if key in low_rank:
                value = value + delta[key + LORA_B].float() @ delta[key + LORA_A].float()
        else:
            raise RplnError(
                f"'{name}': neither the base nor the delta holds {key}, which would stay at random values: "
                "the delta is incomplete."
            )
        if tuple(value.shape) != tuple(like.shape):
            raise RplnError(f"'{name}': {key} is {tuple(value.shape)} but the model needs {tuple(like.shape)}.")
        merged[key] = value.to(STORED_DTYPE).float()  # the bundled models' storage dtype, so both paths agree
    return merged


def build_model(delta_dir: Path, *, base_dir: Path | None = None, attn_implementation: str = "eager"):
    """The full model a delta makes, in memory, float32, eval mode; refuses a damaged delta or a changed base."""
    delta_dir = Path(delta_dir)
    manifest = read_manifest(delta_dir)
    delta = read_delta_tensors(delta_dir, manifest)
    base = read_safetensors(resolve_base(delta_dir, manifest, base_dir) / BASE_WEIGHTS, manifest.base)
    config = make_config(manifest)
    config._attn_implementation = attn_implementation
    with BUILDING_MODELS:
        model = model_class(manifest)(config)
    tied = tied_targets(model)
    needed = {key: value for key, value in model.state_dict().items() if key not in tied}
    merged = merge_state(needed, base, delta, delta_dir.name)
    missing, unexpected = model.load_state_dict(merged, strict=False)
    if set(missing) - tied or unexpected:
        raise RplnError(
            f"'{delta_dir.name}': merged weights do not fit the model ({sorted(missing)[:3]}, {unexpected[:3]})"
        )
    model.tie_weights()
    return model.float().eval()


# ---------------------------------------------------------------- materialising


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rpln" / "deltas")


def cache_key(delta_dir: Path) -> str:
    """16 hex digits from the manifest's bytes, which record the delta's and the base's hashes."""
    return hashlib.sha256((Path(delta_dir) / MANIFEST).read_bytes()).hexdigest()[:16]


def write_checkpoint(model, delta_dir: Path, base: Path, out: Path) -> Path:
    """Save `model` as a standard fp16 from_pretrained directory with the base's tokenizer files."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a server log or a terminal is no place for per-save progress bars
    out.mkdir(parents=True, exist_ok=True)
    model.to(STORED_DTYPE).save_pretrained(out, safe_serialization=True)
    model.float()
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copy2(base / name, out / name)
    record = {"delta": Path(delta_dir).name, "key": cache_key(delta_dir), "base": str(base.name)}
    (out / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def materialise(
    delta_dir: Path, out: Path | None = None, *, base_dir: Path | None = None, cache_dir: Path | None = None
) -> Path:
    """A from_pretrained directory of the delta's model: at `out`, or in the cache (reused when already there)."""
    delta_dir = Path(delta_dir)
    manifest = read_manifest(delta_dir)
    base = resolve_base(delta_dir, manifest, base_dir)
    if out is not None:
        return write_checkpoint(build_model(delta_dir, base_dir=base), delta_dir, base, Path(out))
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    target = root / f"{delta_dir.resolve().name}-{cache_key(delta_dir)}"
    if (target / "config.json").is_file() and (target / BASE_WEIGHTS).is_file():
        return target  # the key covers the manifest, hence both hashes; both were checked just above and below
    read_delta_tensors(delta_dir, manifest)  # hash check before any work
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        write_checkpoint(build_model(delta_dir, base_dir=base), delta_dir, base, staging)
        try:
            os.replace(staging, target)  # atomic: a reader never sees half a directory
        except OSError:
            if not (target / "config.json").is_file():  # someone else won the race only if theirs is whole
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# ---------------------------------------------------------------- writing a delta (training side)


def write_delta(
    out: Path,
    *,
    base_dir: Path,
    config: Mapping,
    full: Mapping[str, torch.Tensor],
    low_rank: Mapping[str, tuple[torch.Tensor, torch.Tensor]] = {},
    notes: Mapping | None = None,
) -> Path:
    """Write a delta directory: `full` tensors replace or add parameters; `low_rank[param] = (A, B)` adds B @ A
    (scale folded into B). The base is named by its folder name and pinned by its weights' hash."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().to(STORED_DTYPE).contiguous() for key, value in full.items()}
    for key, (a, b) in low_rank.items():
        tensors[key + LORA_A] = a.detach().to(STORED_DTYPE).contiguous()
        tensors[key + LORA_B] = b.detach().to(STORED_DTYPE).contiguous()
    save_file(tensors, out / WEIGHTS, metadata={"format": FORMAT})
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "base": Path(base_dir).resolve().name,
        "base_sha256": file_sha256(Path(base_dir) / BASE_WEIGHTS),
        "weights_sha256": file_sha256(out / WEIGHTS),
        "config": dict(config),
        "notes": dict(notes or {}),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpln_core.deltas", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("materialise", help="write a standard from_pretrained directory")
    command.add_argument("delta", type=Path, help="a delta directory, e.g. models/preln-mini-pos")
    command.add_argument("--out", type=Path, help="where to write it (default: the cache, keyed by hash)")
    command.add_argument("--base", type=Path, help="the base directory (default: the sibling the delta names)")
    args = parser.parse_args(argv)
    try:
        path = materialise(args.delta, args.out, base_dir=args.base)
    except RplnError as error:
        print(f"deltas: {error.message}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
