"""Fine-tune the pre-LN MLM for sentiment classification or extractive QA, then score it as the app runs it.

Training logs every step to `<out>/train_log.csv` (step, loss, lr, elapsed_s) and saves `<out>/model`
(safetensors + the base's tokenizer files). The held-out figures in `<out>/eval.json` come from reloading
that directory with `rpln_core.load.load_model` and calling `classify` / `answer`, so they are what the app
does, next to a trivial baseline: the majority class for sentiment, the context's first definition for QA.
Run from the repository root: `python -m scripts.finetune --task sentiment --base models/preln-mini --out ...`.
"""

from __future__ import annotations

import argparse
import collections
import csv
import itertools
import json
import math
import random
import re
import string
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from transformers import AutoTokenizer, PreTrainedModel, get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from rpln_core.errors import RplnError
from rpln_core.load import LoadedModel, load_model, read_architecture
from rpln_core.pretraining import limit_threads
from rpln_core.synthetic import MODEL_CLASSES
from rpln_core.tasks.classify import classify
from rpln_core.tasks.qa import answer
from rpln_core.tasks.qa_spans import make_qa_windows
from scripts.build_corpus import SENTIMENT_LABELS
from scripts.build_qa import first_entry_answer
from scripts.cli import add_config_flags
from scripts.train_mlm import TrainConfig, autocast, build_optimizer, resolve_device
from scripts.train_tokenizer import copy_tokenizer_files

LOG = "train_log.csv"
TASK_HEADS = {"sentiment": "classification", "qa": "qa"}  # our task name -> rpln_core's head name
PUNCTUATION = set(string.punctuation)
LENGTH_GROUP = 50  # batches sorted by length together: little padding, yet batches still vary from epoch to epoch


@dataclass
class FinetuneConfig:
    """The fine-tuning recipe; every field is a CLI flag."""

    task: str = "sentiment"
    base: Path = Path("models/preln-mini")
    data: Path = Path("data")
    out: Path = Path("runs/ft-sentiment")
    epochs: float = 3.0  # may be fractional: steps = ceil(epochs * examples / batch_size)
    batch_size: int = 32
    lr: float = 1e-4
    warmup_ratio: float = 0.06  # RoBERTa's GLUE recipe
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    seed: int = 0
    threads: int = 1
    device: str = "auto"  # cuda when present; evaluation always runs on the CPU, as the app does
    max_train: int | None = None  # a seeded sample of this many training examples, for quick runs
    max_test: int | None = None  # a seeded sample of this many test examples, for quick runs (files are label-sorted)
    log_every: int = 50


@dataclass
class Features:
    """Tokenized training examples: `targets` holds (label,) or (start_token, end_token) per example."""

    input_ids: list[list[int]]
    targets: list[tuple[int, ...]]
    target_names: tuple[str, ...]  # the model's keyword for each target column
    dropped: int = 0  # examples that could not be used (QA: answer outside the model's window)

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, indices: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
        """Model keywords for the chosen examples, right-padded to the longest."""
        rows = [self.input_ids[i] for i in indices]
        width = max(map(len, rows))
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        targets = torch.tensor([self.targets[i] for i in indices], dtype=torch.long)  # [batch, targets]
        named = {name: targets[:, column] for column, name in enumerate(self.target_names)}
        return {"input_ids": input_ids, "attention_mask": attention_mask, **named}


# ---------------------------------------------------------------- data


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        hint = "python -m scripts.build_qa" if path.name.startswith("qa_") else "python -m scripts.build_corpus"
        raise RplnError(f"{path} not found; run `{hint}` first")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def sample(examples: list[dict], limit: int | None, seed: int) -> list[dict]:
    """A seeded random subset of `limit` examples (all of them, in file order, without a limit)."""
    if limit is None or limit >= len(examples):
        return examples
    return random.Random(seed).sample(examples, limit)


def sentiment_features(loaded: LoadedModel, examples: Sequence[dict]) -> Features:
    """Texts cut to the model's limit, as `encode` cuts them in the app."""
    label_ids = {label: i for i, label in SENTIMENT_LABELS.items()}
    encoded = loaded.tokenizer(
        [e["text"] for e in examples], truncation=True, max_length=loaded.max_tokens, verbose=False
    )
    return Features(encoded["input_ids"], [(label_ids[e["label"]],) for e in examples], ("labels",))


def answer_tokens(offsets: list[tuple[int, int]], allowed, start: int, end: int) -> tuple[int, int] | None:
    """First and last token of the character span [start, end) in one window, or None if it is not all there."""
    first = last = None
    for token, (token_start, token_end) in enumerate(offsets):
        if not allowed[token]:
            continue
        if first is None and token_start <= start < token_end:
            first = token
        if token_start < end <= token_end:
            last = token
    return (first, last) if first is not None and last is not None and first <= last else None


def qa_features(loaded: LoadedModel, examples: Sequence[dict]) -> Features:
    """(question, context) windows tokenized by the same `make_qa_windows` that `answer` uses, with the
    answer's tokens; examples whose answer no window holds whole are dropped."""
    input_ids, targets, dropped = [], [], 0
    for example in examples:
        windows = make_qa_windows(
            loaded.tokenizer,
            example["question"],
            example["context"],
            max_seq_len=loaded.max_tokens,
            model_max_tokens=loaded.max_tokens,
        )
        start = example["answer_start"]
        for w in range(windows.input_ids.shape[0]):
            span = answer_tokens(windows.offsets[w], windows.allowed[w], start, start + len(example["answer"]))
            if span is not None:
                length = int(windows.attention_mask[w].sum())
                input_ids.append(windows.input_ids[w, :length].tolist())
                targets.append(span)
                break
        else:
            dropped += 1
    return Features(input_ids, targets, ("start_positions", "end_positions"), dropped)


FEATURES = {"sentiment": sentiment_features, "qa": qa_features}


# ---------------------------------------------------------------- model


def load_base(config: FinetuneConfig) -> LoadedModel:
    """The MLM's body under a new, seeded task head (sdpa attention for speed; the app reloads it eagerly)."""
    architecture, _ = read_architecture(config.base)
    head = TASK_HEADS[config.task]
    labels = {}
    if config.task == "sentiment":
        labels = dict(id2label=SENTIMENT_LABELS, label2id={v: k for k, v in SENTIMENT_LABELS.items()})
    torch.manual_seed(config.seed)  # the head's initialisation
    try:
        model = MODEL_CLASSES[(architecture, head)].from_pretrained(
            config.base, attn_implementation="sdpa", dtype=torch.float32, **labels  # bundled weights are fp16
        )
        tokenizer = AutoTokenizer.from_pretrained(config.base)
    except (OSError, ValueError) as error:
        raise RplnError(f"could not load the base model {config.base}: {error}") from error
    return LoadedModel(str(config.base), "local", architecture, head, model.train(), tokenizer)


# ---------------------------------------------------------------- training


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch's batches: examples shuffled, sorted by length within groups of LENGTH_GROUP batches so a
    batch pads little (on CPU padding costs as much as text), then the batches shuffled."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * LENGTH_GROUP
    batches = []
    for start in range(0, len(order), span):
        group = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def batch_schedule(lengths: Sequence[int], batch_size: int, seed: int) -> Iterator[list[int]]:
    """Batches epoch after epoch, each epoch seeded by (seed, epoch)."""
    for epoch in itertools.count():
        yield from length_grouped_batches(lengths, batch_size, random.Random(seed * 100_003 + epoch))


def total_steps(config: FinetuneConfig, examples: int) -> int:
    return max(1, math.ceil(config.epochs * examples / config.batch_size))


def train_model(loaded: LoadedModel, features: Features, config: FinetuneConfig) -> tuple[int, float]:
    """AdamW with linear warmup and decay; logs each step. Returns (steps, seconds)."""
    device = resolve_device(config.device)
    model: PreTrainedModel = loaded.model.to(device)
    steps = total_steps(config, len(features))
    # RoBERTa's AdamW (betas, eps, no decay on biases and LayerNorms), shared with pre-training
    optimizer = build_optimizer(model, TrainConfig(lr=config.lr, weight_decay=config.weight_decay))
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * steps), steps)
    pad_id = loaded.tokenizer.pad_token_id
    schedule = batch_schedule([len(ids) for ids in features.input_ids], config.batch_size, config.seed)
    started = time.perf_counter()
    with open(config.out / LOG, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "lr", "elapsed_s"])
        for step, indices in zip(range(steps), schedule):
            lr = scheduler.get_last_lr()[0]
            batch = {name: tensor.to(device) for name, tensor in features.batch(indices, pad_id).items()}
            with autocast(device, "auto"):
                loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            scheduler.step()
            elapsed = time.perf_counter() - started
            value = float(loss.detach())
            writer.writerow([step + 1, value, lr, round(elapsed, 3)])
            if (step + 1) % config.log_every == 0 or step + 1 == steps:
                handle.flush()
                print(f"step {step + 1}/{steps} loss {value:.4f} lr {lr:.2e} {elapsed:.0f}s", flush=True)
    return steps, time.perf_counter() - started


def save_model(loaded: LoadedModel, config: FinetuneConfig) -> Path:
    """A standard HF directory that `load_model` reads: safetensors, config with id2label, tokenizer files."""
    directory = config.out / "model"
    loaded.model.cpu().save_pretrained(directory, safe_serialization=True)
    copy_tokenizer_files(config.base, directory)
    return directory


# ---------------------------------------------------------------- evaluation


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower-case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalised answers (SQuAD v2: two empty answers agree fully)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def qa_scores(predictions: Sequence[str], golds: Sequence[str]) -> dict:
    """Mean exact match and F1, in percent as SQuAD reports them."""
    count = max(len(golds), 1)
    return {
        "exact_match": 100 * sum(map(exact_match, predictions, golds)) / count,
        "f1": 100 * sum(map(f1_score, predictions, golds)) / count,
    }


def accuracy(predicted: Sequence[str], gold: Sequence[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / max(len(gold), 1)


def evaluate_sentiment(model_dir: Path, config: FinetuneConfig) -> dict:
    """Accuracy of `classify` on the held-out sentences, next to always answering the training majority."""
    test = sample(read_jsonl(config.data / "sentiment_test.jsonl"), config.max_test, config.seed)
    train_labels = collections.Counter(e["label"] for e in read_jsonl(config.data / "sentiment_train.jsonl"))
    majority = train_labels.most_common(1)[0][0]
    loaded = load_model(str(model_dir))
    predicted = [classify(loaded, e["text"]).labels[0].label for e in test]
    gold = [e["label"] for e in test]
    return {
        "test_examples": len(test),
        "model": {"accuracy": accuracy(predicted, gold)},
        "majority_baseline": {"label": majority, "accuracy": accuracy([majority] * len(test), gold)},
    }


def evaluate_qa(model_dir: Path, config: FinetuneConfig) -> dict:
    """EM and F1 of `answer` (the app's decoding) on held-out questions, next to the first-definition baseline."""
    test = sample(read_jsonl(config.data / "qa_test.jsonl"), config.max_test, config.seed)
    loaded = load_model(str(model_dir))
    golds = [e["answer"] for e in test]
    predictions = [answer(loaded, e["question"], e["context"]).answers[0].answer for e in test]
    return {
        "test_examples": len(test),
        "model": qa_scores(predictions, golds),
        "first_entry_baseline": qa_scores([first_entry_answer(e["context"]) for e in test], golds),
        "samples": [
            {"question": e["question"], "gold": gold, "predicted": predicted}
            for e, gold, predicted in list(zip(test, golds, predictions))[:10]
        ],
    }


EVALUATE = {"sentiment": evaluate_sentiment, "qa": evaluate_qa}


# ---------------------------------------------------------------- the run


def finetune(config: FinetuneConfig) -> dict:
    """Train, save, reload and evaluate; returns what eval.json holds."""
    config.threads = limit_threads(config.threads)
    hf_logging.disable_progress_bar()  # per-load progress bars would bury the training log
    config.out.mkdir(parents=True, exist_ok=True)
    loaded = load_base(config)
    examples = sample(read_jsonl(config.data / f"{config.task}_train.jsonl"), config.max_train, config.seed)
    features = FEATURES[config.task](loaded, examples)
    if len(features) == 0:
        raise RplnError(f"no usable training examples in {config.data}")
    steps, train_s = train_model(loaded, features, config)
    model_dir = save_model(loaded, config)
    started = time.perf_counter()
    figures = EVALUATE[config.task](model_dir, config)
    report = {
        "task": config.task,
        "model_dir": str(model_dir),
        **figures,
        "train_examples": len(features),
        "train_examples_dropped": features.dropped,
        "steps": steps,
        "train_wall_s": round(train_s, 1),
        "eval_wall_s": round(time.perf_counter() - started, 1),
        "threads": config.threads,
        "recipe": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }
    (config.out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def parse_args(argv: Sequence[str] | None = None) -> FinetuneConfig:
    """CLI flags map one-to-one onto FinetuneConfig fields."""
    defaults = FinetuneConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASK_HEADS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    add_config_flags(parser, defaults, skip={"task", "out"},
                     kinds={"base": Path, "data": Path, "max_train": int, "max_test": int})
    return FinetuneConfig(**vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        report = finetune(config)
    except RplnError as error:
        print(f"finetune: {error.message}", file=sys.stderr)
        return 2
    shown = {k: v for k, v in report.items() if k not in {"recipe", "samples"}}
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
