"""Masked-LM pre-training of the pre-LN RoBERTa or its post-LN twin, with one config and one recipe.

Every step is logged to `<out>/train_log.csv` (loss, lr, total and per-layer gradient norms). Checkpoints
hold everything needed to continue bit-for-bit (`--resume`), so CPU runs can go in chunks (`--stop-at`).
Run from the repository root: `python -m scripts.train_mlm --arch pre-ln --tokenizer tok --out runs/preln`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from rpln_core.errors import RplnError
from rpln_core.pretraining import (
    PackedBlocks,
    evaluate_mlm,
    limit_threads,
    mask_tokens,
    mlm_loss,
    pack_texts,
    tokenizer_special_ids,
    unigram_baseline,
    unigram_counts,
)
from rpln_core.synthetic import build_config, build_model
from scripts.cli import add_config_flags
from scripts.train_tokenizer import copy_tokenizer_files

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.csv"
# a changed value here would make a resumed run a different experiment
RECIPE_FIELDS = (
    "arch",
    "steps",
    "batch_size",
    "lr",
    "warmup_steps",
    "seed",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_length",
    "mlm_probability",
    "weight_decay",
    "clip_norm",
)


@dataclass
class TrainConfig:
    """The model config and training recipe; defaults are the bundled models' recipe."""

    arch: str = "pre-ln"
    data: Path = Path("data/pretrain_train.txt")
    eval_data: Path | None = None
    tokenizer: Path = Path("runs/tokenizer")
    out: Path = Path("runs/preln")
    steps: int = 10000
    stop_at: int | None = None
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 500
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    save_every: int = 500
    log_every: int = 50
    threads: int = 2
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_length: int = 128
    mlm_probability: float = 0.15
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    amp: str = "auto"
    eval_max_blocks: int = 2000
    cache: Path = Path("runs/cache")  # packed blocks, shared by every run on the same data and tokenizer
    pack_only: bool = False


@dataclass
class StepLog:
    """One row of train_log.csv."""

    step: int
    loss: float
    lr: float
    grad_norm_total: float
    grad_norm_layers: list[float]
    elapsed_s: float = 0.0

    @property
    def finite(self) -> bool:
        """False once loss or gradient has overflowed: the run has diverged."""
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm_total)

    def row(self) -> list:
        return [self.step, self.loss, self.lr, self.grad_norm_total, *self.grad_norm_layers, round(self.elapsed_s, 3)]


@dataclass
class TrainResult:
    """How a call to `train` ended."""

    step: int
    diverged: bool
    model_dir: Path | None
    tokens_per_s: float


@dataclass
class TrainState:
    """Everything that moves during training."""

    model: PreTrainedModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int = 0
    elapsed_s: float = 0.0


# ---------------------------------------------------------------- setup


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RplnError("--device cuda was asked for but no CUDA device is visible")
    return torch.device(name)


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file."""
    if not path.is_file():
        raise RplnError(f"{path} not found; run `python -m scripts.build_corpus` first")
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def file_digest(*paths: Path) -> str:
    """Short content hash, the cache key for packed blocks."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load_blocks(
    data: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase, max_length: int, cache: Path
) -> PackedBlocks:
    """Packed training blocks, cached by data and tokenizer content since tokenizing the corpus takes minutes."""
    key = file_digest(data, tokenizer_dir / "tokenizer.json")
    path = cache / f"blocks-{data.stem}-{key}-{max_length}.pt"
    if path.is_file():
        return PackedBlocks(**torch.load(path))
    blocks = pack_texts(tokenizer, read_lines(data), max_length)
    if len(blocks) == 0:
        raise RplnError(f"{data} holds no text to train on")
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(asdict(blocks), path)
    return blocks


@functools.lru_cache(maxsize=4)
def epoch_order(n_blocks: int, seed: int, epoch: int) -> torch.Tensor:
    """The block order of one epoch (cached: a step needs at most two epochs)."""
    return torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def block_indices(step: int, batch_size: int, n_blocks: int, seed: int) -> torch.Tensor:
    """The blocks of one step: a fresh seeded permutation per epoch, so the order is a function of the step."""
    positions = range(step * batch_size, (step + 1) * batch_size)
    return torch.tensor([int(epoch_order(n_blocks, seed, p // n_blocks)[p % n_blocks]) for p in positions])


def build_mlm(config: TrainConfig, vocab_size: int) -> PreTrainedModel:
    """The MLM for `config.arch`, identically initialised for both architectures by seed."""
    model_config = build_config(
        config.arch,
        vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_length + 2,  # RoBERTa positions start after the padding index
    )
    model_config._attn_implementation = "sdpa"  # training speed; the app reloads with eager attention
    return build_model(config.arch, "mlm", model_config, seed=config.seed).train()


def build_optimizer(model: PreTrainedModel, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with RoBERTa's betas/eps; no weight decay on biases and LayerNorm weights."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)


def new_state(config: TrainConfig, vocab_size: int, device: torch.device) -> TrainState:
    """Fresh model, optimizer and linear warmup/decay schedule."""
    model = build_mlm(config, vocab_size).to(device)
    optimizer = build_optimizer(model, config)
    scheduler = get_linear_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    return TrainState(model, optimizer, scheduler)


# ---------------------------------------------------------------- one step


def combined_norm(norms: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """L2 norm of several parameters' gradient norms (zero when there are none)."""
    return torch.stack(norms).norm() if norms else torch.zeros((), device=device)


def grad_norms(model: PreTrainedModel) -> tuple[float, list[float]]:
    """Whole-model gradient norm before clipping, and one per encoder.layer.{i} (all its parameters)."""
    norms = {p: p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None}
    device = next(model.parameters()).device
    layers = [
        combined_norm([norms[p] for p in layer.parameters() if p in norms], device)
        for layer in model.base_model.encoder.layer
    ]
    total, *per_layer = torch.stack([combined_norm(list(norms.values()), device), *layers]).tolist()  # one device sync
    return total, per_layer


def step_batch(blocks: PackedBlocks, tokenizer: PreTrainedTokenizerBase, config: TrainConfig, step: int):
    """(inputs, attention_mask, labels) of a step; the masking seed depends only on (seed, step)."""
    input_ids, attention_mask = blocks.batch(block_indices(step, config.batch_size, len(blocks), config.seed))
    inputs, labels = mask_tokens(
        input_ids,
        special_ids=tokenizer_special_ids(tokenizer),
        mask_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        generator=torch.Generator().manual_seed(config.seed * 1_000_003 + step),
        mlm_probability=config.mlm_probability,
    )
    return inputs, attention_mask, labels


def autocast(device: torch.device, amp: str):
    """bf16 autocast on CUDA unless --amp off; CPU runs stay in fp32."""
    if device.type == "cuda" and amp == "auto":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(state: TrainState, batch, config: TrainConfig, device: torch.device) -> StepLog:
    """Forward, backward, measure gradient norms, then update unless the loss is not finite."""
    inputs, attention_mask, labels = (tensor.to(device) for tensor in batch)
    lr = state.scheduler.get_last_lr()[0]
    with autocast(device, config.amp):
        loss = mlm_loss(state.model, inputs, attention_mask, labels)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    total, layers = grad_norms(state.model)
    log = StepLog(state.step + 1, float(loss.detach()), lr, total, layers)
    if log.finite:  # an update from an overflowed gradient would only destroy the weights
        if config.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.clip_norm)
        state.optimizer.step()
        state.scheduler.step()
    state.step += 1
    return log


# ---------------------------------------------------------------- log and checkpoints


def log_header(num_layers: int) -> list[str]:
    """train_log.csv's columns."""
    layers = [f"grad_norm_layer_{i}" for i in range(num_layers)]
    return ["step", "loss", "lr", "grad_norm_total", *layers, "elapsed_s"]


def open_log(path: Path, num_layers: int, keep_until: int):
    """Open the log for appending, first dropping rows past `keep_until` (steps after the checkpoint)."""
    rows = []
    if keep_until > 0 and path.is_file():
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle)][1:]
        rows = [row for row in rows if int(row[0]) <= keep_until]
    handle = open(path, "w", newline="")
    writer = csv.writer(handle)
    writer.writerow(log_header(num_layers))
    writer.writerows(rows)
    return handle, writer


def rng_states(device: torch.device) -> dict:
    """Global RNG states (dropout draws from them); data order and masking are seeded per step."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict, device: torch.device) -> None:
    """Put the global RNGs back where the checkpoint left them."""
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def recipe(config: TrainConfig) -> dict:
    """The fields that define the experiment."""
    return {name: getattr(config, name) for name in RECIPE_FIELDS}


def save_checkpoint(state: TrainState, config: TrainConfig, device: torch.device) -> Path:
    """Write the checkpoint atomically, so a run killed mid-save still has the previous one."""
    path = config.out / CHECKPOINT
    payload = {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "rng": rng_states(device),
        "step": state.step,
        "blocks_seen": state.step * config.batch_size,
        "elapsed_s": state.elapsed_s,
        "recipe": recipe(config),
    }
    torch.save(payload, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    return path


def load_checkpoint(state: TrainState, config: TrainConfig, device: torch.device) -> None:
    """Restore a checkpoint into `state`, refusing one made with another recipe."""
    path = config.out / CHECKPOINT
    if not path.is_file():
        raise RplnError(f"--resume: no checkpoint at {path}")
    # on CPU: RNG states must stay CPU tensors; load_state_dict moves the rest to the parameters' device
    payload = torch.load(path, map_location="cpu", weights_only=False)
    changed = {k: (v, recipe(config)[k]) for k, v in payload["recipe"].items() if recipe(config).get(k) != v}
    if changed:
        raise RplnError(f"--resume: the checkpoint was made with another recipe (was, now): {changed}")
    state.model.load_state_dict(payload["model"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.scheduler.load_state_dict(payload["scheduler"])
    restore_rng(payload["rng"], device)
    state.step, state.elapsed_s = payload["step"], payload["elapsed_s"]


def save_final(state: TrainState, config: TrainConfig) -> Path:
    """A standard HF directory: safetensors weights, config and the tokenizer files."""
    directory = config.out / "model"
    state.model.save_pretrained(directory, safe_serialization=True)
    copy_tokenizer_files(config.tokenizer, directory)
    return directory


def evaluate_final(state: TrainState, config: TrainConfig, tokenizer, train_blocks: PackedBlocks) -> dict:
    """Held-out masked-token figures of the model and of the unigram baseline, on the same masked positions."""
    blocks = pack_texts(tokenizer, read_lines(config.eval_data), config.max_length)
    blocks = PackedBlocks(blocks.ids[: config.eval_max_blocks], blocks.lengths[: config.eval_max_blocks])
    counts = unigram_counts(train_blocks, len(tokenizer), tokenizer_special_ids(tokenizer))
    return {
        "eval_data": str(config.eval_data),
        "eval_blocks": len(blocks),
        "model": asdict(evaluate_mlm(state.model, tokenizer, blocks, mlm_probability=config.mlm_probability)),
        "unigram": asdict(unigram_baseline(counts, tokenizer, blocks, mlm_probability=config.mlm_probability)),
    }


# ---------------------------------------------------------------- the loop


def run_steps(
    state: TrainState, blocks: PackedBlocks, tokenizer, config: TrainConfig, device: torch.device, stop_at: int
) -> tuple[bool, float]:
    """Step until `stop_at` or divergence, logging every step; returns (diverged, tokens per second)."""
    handle, writer = open_log(config.out / LOG, config.num_layers, keep_until=state.step)
    tokens, started, diverged = 0, time.perf_counter(), False
    with handle:
        while state.step < stop_at and not diverged:
            step_started = time.perf_counter()
            batch = step_batch(blocks, tokenizer, config, state.step)
            log = train_step(state, batch, config, device)
            state.elapsed_s += time.perf_counter() - step_started
            log.elapsed_s = state.elapsed_s
            writer.writerow(log.row())
            tokens += int(batch[1].sum())
            diverged = not log.finite
            if state.step % config.log_every == 0 or diverged:
                handle.flush()
                print(f"step {log.step} loss {log.loss:.4f} lr {log.lr:.2e} grad {log.grad_norm_total:.3f}", flush=True)
            if state.step % config.save_every == 0 and not diverged:
                save_checkpoint(state, config, device)
    return diverged, tokens / max(time.perf_counter() - started, 1e-9)


def train(config: TrainConfig) -> TrainResult:
    """Train (or continue) until `stop_at` (default: `steps`); save checkpoints, the log and the final model."""
    limit_threads(config.threads)
    device = resolve_device(config.device)
    config.out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    blocks = load_blocks(config.data, config.tokenizer, tokenizer, config.max_length, config.cache)
    if config.pack_only:
        print(f"{len(blocks):,} blocks of {config.max_length} tokens in {config.cache}", flush=True)
        return TrainResult(0, False, None, 0.0)
    state = new_state(config, len(tokenizer), device)
    if config.resume:
        load_checkpoint(state, config, device)
    diverged, tokens_per_s = run_steps(
        state, blocks, tokenizer, config, device, min(config.stop_at or config.steps, config.steps)
    )
    if diverged:
        print(f"loss is not finite at step {state.step}: stopped (the log keeps the curve)", flush=True)
        return TrainResult(state.step, True, None, tokens_per_s)
    save_checkpoint(state, config, device)
    model_dir = save_final(state, config) if state.step == config.steps else None
    if model_dir and config.eval_data and config.eval_data.is_file():
        figures = evaluate_final(state, config, tokenizer, blocks)
        (config.out / "eval.json").write_text(json.dumps(figures, indent=2) + "\n")
    return TrainResult(state.step, False, model_dir, tokens_per_s)


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """CLI flags map one-to-one onto TrainConfig fields."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["pre-ln", "post-ln"], default=defaults.arch)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=defaults.device)
    parser.add_argument("--amp", choices=["auto", "off"], default=defaults.amp, help="bf16 autocast on CUDA")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    parser.add_argument("--eval-data", type=Path, help="held-out text (default: pretrain_test.txt beside --data)")
    parser.add_argument("--stop-at", type=int, help="stop (with a checkpoint) at this step; for CPU chunks")
    parser.add_argument(
        "--pack-only", action="store_true", help="only tokenize the corpus into --cache (before parallel runs)"
    )
    add_config_flags(parser, defaults, skip={"arch", "device", "amp", "resume", "eval_data", "stop_at", "pack_only"},
                     kinds=dict.fromkeys(("data", "tokenizer", "out", "cache"), Path))
    config = TrainConfig(**vars(parser.parse_args(argv)))
    if config.eval_data is None:
        config.eval_data = config.data.with_name(config.data.name.replace("_train", "_test"))
    if config.eval_data == config.data:
        config.eval_data = None
    return config


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        result = train(config)
    except RplnError as error:
        print(f"train_mlm: {error.message}", file=sys.stderr)
        return 2
    if not config.pack_only:
        print(f"stopped at step {result.step}; {result.tokens_per_s:,.0f} tokens/s; model: {result.model_dir}")
    return 0  # a diverged no-warmup run is a result too: its curve is in the log


if __name__ == "__main__":
    sys.exit(main())
