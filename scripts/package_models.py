"""Package finished model directories as the bundled models under models/, in fp16, with their curves.

Each bundled model is a standard `from_pretrained` directory: config.json (architectures and dtype set),
fp16 safetensors weights and the tokenizer files. Training curves go to `models/curves/<run>.csv`. After
writing, every model is reloaded offline through `rpln_core.load.load_model` (upcast to fp32, as the app
loads it) and must predict what its fp32 source predicts on sample inputs; the whole folder must stay
within the size budget. Run from the repository root: `python -m scripts.package_models`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from rpln_core.errors import RplnError
from rpln_core.load import BUNDLED_DIR, LoadedModel, load_model
from rpln_core.tasks.classify import classify
from rpln_core.tasks.fill_mask import fill_mask
from rpln_core.tasks.qa import answer
from scripts.train_tokenizer import copy_tokenizer_files

# name -> the run's final model directory; the run folder (its parent) holds train_log.csv
DEFAULT_MODELS = {
    "preln-mini": Path("runs/preln/model"),
    "postln-mini": Path("runs/postln/model"),
    "preln-mini-sentiment": Path("runs/ft-sentiment/model"),
    "preln-mini-qa": Path("runs/ft-qa/model"),
}
LIMIT_MB = 60.0  # models/ budget (MiB): the GPU machine carries every tracked file within 64 MiB
# RoBERTa's own files (the Hub checkpoints ship them too) and the fast tokenizer's
REQUIRED_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")
CURVES = "curves"
LOG = "train_log.csv"
MB = 1024 * 1024

# Sentences from the corpus' genres (speeches, scripture, reviews, definitions).
FILL_MASK_SAMPLES = (
    "The president spoke to the <mask> about the economy.",
    "In the beginning God created the heaven and the <mask>.",
    "This movie was one of the <mask> films I have ever seen.",
)
CLASSIFY_SAMPLES = ("a gripping , funny and moving film .", "a dull , lifeless and boring mess .")
QA_SAMPLES = (
    ("What is a dog?", "cat: a small domesticated feline. dog: a domesticated carnivore kept as a pet. oak: a tree."),
)


@dataclass
class ModelCheck:
    """One bundled model after packaging: where it came from, its size, and how its predictions compare."""

    name: str
    source: str
    task: str
    dtype: str  # the weights' dtype as config.json records it
    architectures: list[str]
    missing_files: list[str]  # required tokenizer files the bundled directory lacks
    size_mb: float
    source_predictions: list[str]
    bundled_predictions: list[str]

    @property
    def same_predictions(self) -> bool:
        return self.source_predictions == self.bundled_predictions


@dataclass
class PackageReport:
    """What package() wrote and verified."""

    dest: str
    models: list[ModelCheck]
    curves: list[str]
    total_mb: float
    limit_mb: float
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- writing


def write_model(source: Path, target: Path) -> None:
    """Save `source` at `target` with fp16 weights; the directory is replaced, so no stale file survives."""
    loaded = load_model(str(source))
    if target.exists():
        shutil.rmtree(target)
    # config.json records dtype float16; load_model upcasts to float32, which the app computes in
    loaded.model.half().save_pretrained(target, safe_serialization=True)
    copy_tokenizer_files(source, target)


def run_name(model_dir: Path) -> str:
    """The run a model directory belongs to: runs/preln/model -> preln; a directory elsewhere names itself."""
    return model_dir.parent.name if model_dir.name == "model" else model_dir.name


def copy_curve(run_dir: Path, curves_dir: Path) -> Path:
    """<run>/train_log.csv -> models/curves/<run>.csv."""
    log = run_dir / LOG
    if not log.is_file():
        raise RplnError(f"{log} not found: is {run_dir} a training run folder?")
    curves_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(log, curves_dir / f"{run_dir.name}.csv"))


# ---------------------------------------------------------------- verification


def predictions(loaded: LoadedModel) -> list[str]:
    """What the model answers on the sample inputs of its task: top-1 token, label or answer span."""
    if loaded.task == "mlm":
        return [fill_mask(loaded, text, top_k=1).predictions[0][0].token_str for text in FILL_MASK_SAMPLES]
    if loaded.task == "classification":
        return [classify(loaded, text).labels[0].label for text in CLASSIFY_SAMPLES]
    if loaded.task == "qa":
        return [answer(loaded, question, context).answers[0].answer for question, context in QA_SAMPLES]
    raise RplnError(f"'{loaded.name}' has no task head to bundle (task {loaded.task})")


def load_bundled(name: str, dest: Path) -> LoadedModel:
    """By name when packaging into models/ (the app's path), else from the folder under `dest`."""
    in_models = dest.resolve() == BUNDLED_DIR.resolve()
    return load_model(name if in_models else str(dest / name))


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / MB


def verify(name: str, source: Path, dest: Path) -> ModelCheck:
    """Reload the bundled model offline and compare it with its fp32 source."""
    bundled = load_bundled(name, dest)
    reference = load_model(str(source))
    config = json.loads((dest / name / "config.json").read_text())
    return ModelCheck(
        name=name,
        source=str(source),
        task=bundled.task,
        dtype=str(config.get("dtype") or config.get("torch_dtype")),
        architectures=list(config.get("architectures") or []),
        missing_files=[f for f in REQUIRED_TOKENIZER_FILES if not (dest / name / f).is_file()],
        size_mb=round(folder_mb(dest / name), 2),
        source_predictions=predictions(reference),
        bundled_predictions=predictions(bundled),
    )


def problems_of(check: ModelCheck, reference_class: str) -> list[str]:
    """Everything wrong with one bundled model, in words."""
    found = []
    if check.dtype != "float16":
        found.append(f"{check.name}: config.json says dtype {check.dtype}, expected float16")
    if check.architectures != [reference_class]:
        found.append(f"{check.name}: architectures {check.architectures}, expected [{reference_class!r}]")
    if check.missing_files:
        found.append(f"{check.name}: tokenizer files missing: {check.missing_files}")
    if not check.same_predictions:
        found.append(
            f"{check.name}: fp16 copy predicts {check.bundled_predictions}, source {check.source_predictions}"
        )
    return found


# ---------------------------------------------------------------- the run


def package(
    models: dict[str, Path], dest: Path = BUNDLED_DIR, curve_runs: Sequence[Path] = (), limit_mb: float = LIMIT_MB
) -> PackageReport:
    """Write each model and curve under `dest`, then verify; `problems` is empty when all is well."""
    missing = [f"{name} ({path})" for name, path in models.items() if not (path / "config.json").is_file()]
    if missing:
        raise RplnError(f"model directories not found: {', '.join(missing)}")
    os.environ["HF_HUB_OFFLINE"] = "1"  # a bundled model must never need the network
    dest.mkdir(parents=True, exist_ok=True)
    runs = [path.parent for path in models.values() if (path.parent / LOG).is_file()] + list(curve_runs)
    curves = [str(copy_curve(run, dest / CURVES)) for run in dict.fromkeys(runs)]
    checks, problems = [], []
    for name, source in models.items():
        write_model(source, dest / name)
        check = verify(name, source, dest)
        source_class = json.loads((source / "config.json").read_text())["architectures"][0]
        problems += problems_of(check, source_class)
        checks.append(check)
    total = round(folder_mb(dest), 2)
    if total > limit_mb:
        problems.append(f"{dest} holds {total:.1f} MB, over the {limit_mb:.0f} MB budget")
    return PackageReport(str(dest), checks, curves, total, limit_mb, problems)


def parse_models(pairs: Sequence[str] | None) -> dict[str, Path]:
    """NAME=DIR pairs, or the four default bundled models."""
    if not pairs:
        return dict(DEFAULT_MODELS)
    models = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise RplnError(f"--model takes NAME=DIR, got {pair!r}")
        models[name] = Path(path)
    return models


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", metavar="NAME=DIR", help="repeatable; default: the four bundled")
    parser.add_argument("--curves", type=Path, nargs="*", default=[], help="extra run folders (e.g. no-warmup runs)")
    parser.add_argument("--dest", type=Path, default=BUNDLED_DIR)
    parser.add_argument("--limit-mb", type=float, default=LIMIT_MB)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        report = package(parse_models(args.model), args.dest, args.curves, args.limit_mb)
    except RplnError as error:
        print(f"package_models: {error.message}", file=sys.stderr)
        return 2
    for check in report.models:
        print(f"{check.name:24s} {check.size_mb:7.2f} MB  {check.task:14s} {check.dtype}  {check.bundled_predictions}")
    for curve in report.curves:
        print(f"curve {curve}")
    print(f"total {report.dest}: {report.total_mb:.2f} MB (limit {report.limit_mb:.0f} MB)")
    for problem in report.problems:
        print(f"package_models: {problem}", file=sys.stderr)
    return 2 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
