"""Train the token-classification, multiple-choice and causal-LM heads over preln-mini and ship each as a delta.

`--delta lora` (the shipped recipe) freezes the base, trains rank-r updates of every encoder Linear, every
LayerNorm, every encoder bias and the head, and writes only those (rpln_core.deltas' format); `--delta full`
trains every parameter and writes them all (the comparison that measures what the delta costs). Every step is
logged to `<out>/train_log.csv` (step, loss, lr, elapsed_s); the held-out figures in `<out>/eval.json` come from
the model `rpln_core.deltas.build_model` rebuilds from the written delta (fp16 storage included), next to baselines:
- pos: agreement with the silver tagger per tagger word (the tag at the token holding the word's first
  character), next to the most frequent tag of each word form in training and to always the most frequent tag;
- choice: accuracy over 4 definitions, next to random choice (25%);
- causal: held-out perplexity over the packed test blocks, next to unigram and bigram models of the same tokens.
Run from the repository root: `python -m scripts.finetune_heads --task pos --out runs/head-pos`.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import transformers
from transformers import AutoTokenizer, get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from rpln_core import deltas
from rpln_core.errors import RplnError
from rpln_core.pretraining import PackedBlocks, limit_threads
from scripts.cli import add_config_flags
from scripts.finetune import read_jsonl, sample
from scripts.lora import add_low_rank, merge_low_rank
from scripts.train_mlm import load_blocks

LOG = "train_log.csv"
IGNORE = -100
RUNTIME_CONFIG_KEYS = (
    "_attn_implementation_autoset", "_name_or_path", "output_attentions", "output_hidden_states", "return_dict",
    "chunk_size_feed_forward",
)
CLASSES = {"pos": "ForTokenClassification", "choice": "ForMultipleChoice", "causal": "ForCausalLM"}


@dataclass
class HeadConfig:
    """The recipe; every field is a CLI flag."""

    task: str = "pos"
    out: Path = Path("runs/head-pos")
    base: Path = Path("models/preln-mini")
    data: Path = Path("data")
    delta: str = "lora"  # lora: the shipped, small delta; full: every weight trained (the comparison)
    rank: int = 8
    alpha: float = 16.0
    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    seed: int = 0
    threads: int = 2
    max_train: int | None = None
    max_test: int | None = None
    log_every: int = 25
    cache: Path = Path("runs/cache")  # packed pre-training blocks, shared with scripts.train_mlm


# ---------------------------------------------------------------- batches per task


def pad(rows: Sequence[Sequence[int]], value: int, width: int | None = None) -> torch.Tensor:
    width = width or max(map(len, rows))
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def tag_labels(offsets: Sequence[tuple[int, int]], words: Sequence[Sequence], label2id: dict) -> list[int]:
    """Each token's label: the tag of the first word starting inside it; -100 where none starts (and on <s>, </s>)."""
    labels, w = [], 0
    for start, end in offsets:
        if start == end:
            labels.append(IGNORE)
            continue
        while w < len(words) and words[w][0] < start:
            w += 1
        labels.append(label2id.get(words[w][2], IGNORE) if w < len(words) and words[w][0] < end else IGNORE)
        while w < len(words) and words[w][0] < end:
            w += 1
    return labels


def pos_examples(tokenizer, examples: Sequence[dict], label2id: dict) -> list[tuple[list[int], list[int]]]:
    encoded = tokenizer([e["text"] for e in examples], truncation=True, max_length=128, return_offsets_mapping=True)
    return [
        (ids, tag_labels(offsets, e["words"], label2id))
        for ids, offsets, e in zip(encoded["input_ids"], encoded["offset_mapping"], examples)
    ]


def choice_inputs(tokenizer, items: Sequence[dict]) -> list[list[list[int]]]:
    """Per question, one `<s> word </s></s> definition </s>` row per choice."""
    rows = []
    for item in items:
        words = [item["word"]] * len(item["choices"])
        rows.append(tokenizer(words, item["choices"], truncation="only_second", max_length=128)["input_ids"])
    return rows


def choice_batch(rows: Sequence[list[list[int]]], pad_id: int) -> dict:
    width = max(len(choice) for question in rows for choice in question)
    ids = torch.stack([pad(question, pad_id, width) for question in rows])  # [batch, choices, tokens]
    return {"input_ids": ids, "attention_mask": (ids != pad_id).long()}


def causal_batch(blocks: PackedBlocks, indices: torch.Tensor, pad_id: int) -> dict:
    ids, mask = blocks.batch(indices)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE)}


def epochs_of(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Shuffled batches, a new seeded order each epoch, forever."""
    epoch = 0
    while True:
        order = list(range(n))
        random.Random(seed * 1000 + epoch).shuffle(order)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]
        epoch += 1


# ---------------------------------------------------------------- model and delta


def base_config(config: HeadConfig) -> dict:
    return json.loads((config.base / "config.json").read_text())


def head_class(config: HeadConfig):
    prefix = {"roberta-prelayernorm": "RobertaPreLayerNorm", "roberta": "Roberta"}[base_config(config)["model_type"]]
    return getattr(transformers, prefix + CLASSES[config.task])


def build_trainable(config: HeadConfig, extra: dict):
    """The base's weights under the task's class (new head seeded), then frozen but for what the delta holds."""
    torch.manual_seed(config.seed)
    model = head_class(config).from_pretrained(config.base, dtype=torch.float32, attn_implementation="sdpa", **extra)
    model.train()
    low_rank = {}
    if config.delta == "lora":
        prefix = model.base_model_prefix + "."
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(trainable_in_delta(name, prefix))
        low_rank = add_low_rank(model.base_model, prefix, config.rank, config.alpha)
    return model, low_rank


def trainable_in_delta(name: str, prefix: str) -> bool:
    """LayerNorms, encoder biases and the head (pooler included); never the embeddings (the tied decoder)."""
    if not name.startswith(prefix):
        return True  # the head: classifier or lm_head (its decoder weight is the word embeddings, named there)
    body = name[len(prefix) :]
    if body.startswith("embeddings."):
        return "LayerNorm" in body
    return "LayerNorm" in body or body.startswith("pooler.") or (body.startswith("encoder.") and body.endswith(".bias"))


def write_model_delta(model, low_rank: dict, config: HeadConfig, notes: dict) -> Path:
    """The delta of what was trained (all weights for --delta full), merged updates excluded."""
    factors = {name: update.factors() for name, update in low_rank.items()}
    merge_low_rank(model.base_model)
    tied = deltas.tied_targets(model)
    state = model.state_dict()
    if config.delta == "lora":
        trained = {name for name, p in model.named_parameters() if p.requires_grad}
        full = {name: state[name] for name in trained}
    else:
        full = {name: value for name, value in state.items() if name not in tied}
    model_config = model.config.to_dict()
    model_config.update(architectures=[type(model).__name__], dtype="float16")
    for runtime in RUNTIME_CONFIG_KEYS:  # call-time settings and where it was loaded from, not the model
        model_config.pop(runtime, None)
    return deltas.write_delta(
        config.out / "delta", base_dir=config.base, config=model_config, full=full, low_rank=factors, notes=notes
    )


# ---------------------------------------------------------------- training


def train(model, batches: Iterator[dict], config: HeadConfig) -> float:
    """AdamW with linear warm-up and decay over `config.steps`; logs every step; returns training seconds."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * config.steps), config.steps)
    started = time.perf_counter()
    with open(config.out / LOG, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "lr", "elapsed_s"])
        for step in range(1, config.steps + 1):
            lr = scheduler.get_last_lr()[0]
            loss = model(**next(batches)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.clip_norm)
            optimizer.step()
            scheduler.step()
            elapsed = time.perf_counter() - started
            value = loss.item()
            writer.writerow([step, value, lr, round(elapsed, 3)])
            if step % config.log_every == 0 or step == config.steps:
                handle.flush()
                print(f"step {step}/{config.steps} loss {value:.4f} lr {lr:.2e} {elapsed:.0f}s", flush=True)
    return time.perf_counter() - started


# ---------------------------------------------------------------- the tasks


def run_pos(config: HeadConfig, tokenizer) -> tuple[dict, dict]:
    train_set = sample(read_jsonl(config.data / "pos_train.jsonl"), config.max_train, config.seed)
    test_set = sample(read_jsonl(config.data / "pos_test.jsonl"), config.max_test, config.seed)
    counts = collections.Counter(tag for e in train_set for *_, tag in e["words"])
    tags = sorted(counts)
    label2id = {tag: i for i, tag in enumerate(tags)}
    extra = dict(num_labels=len(tags), id2label=dict(enumerate(tags)), label2id=label2id)
    model, low_rank = build_trainable(config, extra)
    features = pos_examples(tokenizer, train_set, label2id)
    pad_id = tokenizer.pad_token_id

    def batches():
        for indices in epochs_of(len(features), config.batch_size, config.seed):
            ids = pad([features[i][0] for i in indices], pad_id)
            yield {"input_ids": ids, "attention_mask": (ids != pad_id).long(),
                   "labels": pad([features[i][1] for i in indices], IGNORE)}

    train_s = train(model, batches(), config)
    write_model_delta(model, low_rank, config, {"task": "pos", "labels": "Lingua::EN::Tagger 0.31 silver tags"})
    built = deltas.build_model(config.out / "delta", base_dir=config.base)
    figures = evaluate_pos(built, tokenizer, train_set, test_set, counts)
    return figures, {"train_s": train_s, "train_lines": len(train_set), "labels": len(tags)}


def word_tokens(offsets: Sequence[tuple[int, int]], words: Sequence[Sequence]) -> list[int | None]:
    """For each word, the token holding its first character (None when truncation cut it off)."""
    found = []
    for start, *_ in words:
        found.append(next((t for t, (a, b) in enumerate(offsets) if a <= start < b), None))
    return found


@torch.no_grad()
def evaluate_pos(model, tokenizer, train_set, test_set, counts) -> dict:
    id2label = model.config.id2label
    by_word = collections.defaultdict(collections.Counter)
    for e in train_set:
        for start, end, tag in e["words"]:
            by_word[e["text"][start:end]][tag] += 1
    most_frequent = counts.most_common(1)[0][0]
    total = right = majority_right = frequent_right = unseen = unseen_right = shared = 0
    for e in test_set:
        encoded = tokenizer(
            e["text"], truncation=True, max_length=128, return_offsets_mapping=True, return_tensors="pt"
        )
        offsets = encoded.pop("offset_mapping")[0].tolist()
        predicted = model(**encoded).logits[0].argmax(-1).tolist()
        tokens = word_tokens(offsets, e["words"])
        previous = None
        for (start, end, gold), token in zip(e["words"], tokens):
            word = e["text"][start:end]
            guess = id2label[predicted[token]] if token is not None else None
            total += 1
            right += guess == gold
            shared += token is not None and token == previous
            previous = token
            seen = by_word.get(word)
            majority_right += (seen.most_common(1)[0][0] if seen else most_frequent) == gold
            frequent_right += most_frequent == gold
            if not seen:
                unseen += 1
                unseen_right += guess == gold
    return {
        "test_lines": len(test_set),
        "test_words": total,
        "words_sharing_a_token_with_the_previous_word": shared,
        "model": {"agreement": right / total, "agreement_on_words_unseen_in_training": unseen_right / max(unseen, 1)},
        "majority_tag_per_word_baseline": {"agreement": majority_right / total},
        "most_frequent_tag_baseline": {"tag": most_frequent, "agreement": frequent_right / total},
        "unseen_words": unseen,
    }


def run_choice(config: HeadConfig, tokenizer) -> tuple[dict, dict]:
    train_set = sample(read_jsonl(config.data / "choice_train.jsonl"), config.max_train, config.seed)
    test_set = sample(read_jsonl(config.data / "choice_test.jsonl"), config.max_test, config.seed)
    model, low_rank = build_trainable(config, {})
    rows, labels = choice_inputs(tokenizer, train_set), [item["label"] for item in train_set]

    def batches():
        for indices in epochs_of(len(rows), config.batch_size, config.seed):
            batch = choice_batch([rows[i] for i in indices], tokenizer.pad_token_id)
            yield {**batch, "labels": torch.tensor([labels[i] for i in indices])}

    train_s = train(model, batches(), config)
    write_model_delta(model, low_rank, config, {"task": "choice", "data": "WordNet 3.0 glosses, 4 choices"})
    model = deltas.build_model(config.out / "delta", base_dir=config.base)
    right = 0
    test_rows = choice_inputs(tokenizer, test_set)
    with torch.no_grad():
        for start in range(0, len(test_set), 64):
            logits = model(**choice_batch(test_rows[start : start + 64], tokenizer.pad_token_id)).logits
            golds = [item["label"] for item in test_set[start : start + 64]]
            right += sum(int(p == gold) for p, gold in zip(logits.argmax(-1).tolist(), golds))
    choices = len(test_set[0]["choices"])
    figures = {
        "test_questions": len(test_set),
        "choices": choices,
        "model": {"accuracy": right / len(test_set)},
        "random_choice_baseline": {"accuracy": 1 / choices},
        "samples": [{"word": item["word"], "answer": item["choices"][item["label"]]} for item in test_set[:5]],
    }
    return figures, {"train_s": train_s, "train_questions": len(train_set)}


def run_causal(config: HeadConfig, tokenizer) -> tuple[dict, dict]:
    train_blocks = load_blocks(config.data / "pretrain_train.txt", config.base, tokenizer, 128, config.cache)
    test_blocks = load_blocks(config.data / "pretrain_test.txt", config.base, tokenizer, 128, config.cache)
    if config.max_test:
        test_blocks = PackedBlocks(test_blocks.ids[: config.max_test], test_blocks.lengths[: config.max_test])
    model, low_rank = build_trainable(config, {"is_decoder": True})
    start_ppl = perplexity(model.eval(), test_blocks, tokenizer.pad_token_id)
    model.train()

    def batches():
        generator = torch.Generator().manual_seed(config.seed)
        while True:
            indices = torch.randint(len(train_blocks), (config.batch_size,), generator=generator)
            yield causal_batch(train_blocks, indices, tokenizer.pad_token_id)

    train_s = train(model, batches(), config)
    write_model_delta(model, low_rank, config, {"task": "causal", "data": "pre-training split, 128-token blocks"})
    built = deltas.build_model(config.out / "delta", base_dir=config.base)
    unigram, bigram = ngram_perplexities(train_blocks, test_blocks, len(tokenizer))
    figures = {
        "test_blocks": len(test_blocks),
        "predicted_tokens": int((test_blocks.lengths - 1).sum()),
        "model": {"perplexity": perplexity(built, test_blocks, tokenizer.pad_token_id)},
        "start_point": {"perplexity": start_ppl, "what": "preln-mini's weights under a causal mask, before training"},
        "unigram_baseline": {"perplexity": unigram, "smoothing": "add-one"},
        "bigram_baseline": {"perplexity": bigram, "smoothing": "interpolated absolute discounting, d=0.75"},
        "samples": generate_samples(built, tokenizer),
    }
    return figures, {"train_s": train_s, "train_tokens": config.steps * config.batch_size * 128}


@torch.no_grad()
def perplexity(model, blocks: PackedBlocks, pad_id: int, batch_size: int = 64) -> float:
    """exp of the mean next-token cross-entropy over every block position after the first."""
    nll, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = causal_batch(blocks, torch.arange(start, min(start + batch_size, len(blocks))), pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["labels"][:, 1:]
        nll += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))
        count += int((targets != IGNORE).sum())
    return math.exp(nll / count)


def block_pairs(blocks: PackedBlocks) -> tuple[torch.Tensor, torch.Tensor]:
    """(previous token, next token) for every predicted position of every block."""
    mask = torch.arange(blocks.ids.shape[1])[None, 1:] < blocks.lengths[:, None]
    return blocks.ids[:, :-1][mask], blocks.ids[:, 1:][mask]


def ngram_perplexities(train_blocks: PackedBlocks, test_blocks: PackedBlocks, vocab: int) -> tuple[float, float]:
    """Held-out perplexity of an add-one unigram and of an interpolated absolute-discounting bigram (d = 0.75),
    both counted on the training blocks' predicted positions, scored on the same test tokens as the model."""
    prev, nxt = block_pairs(train_blocks)
    unigram = (torch.bincount(nxt, minlength=vocab).double() + 1) / (len(nxt) + vocab)
    pairs, pair_counts = torch.unique(prev * vocab + nxt, return_counts=True)  # sorted
    context = torch.bincount(prev, minlength=vocab).double()
    followers = torch.bincount(pairs // vocab, minlength=vocab).double()  # distinct next tokens per context
    test_prev, test_next = block_pairs(test_blocks)
    keys = test_prev * vocab + test_next
    where = torch.searchsorted(pairs, keys).clamp(max=len(pairs) - 1)
    seen = pairs[where] == keys
    count = torch.where(seen, pair_counts[where].double(), torch.zeros(len(keys), dtype=torch.double))
    d, c = 0.75, context[test_prev]
    backoff = torch.where(c > 0, d * followers[test_prev] / c.clamp(min=1), torch.ones_like(c))
    discounted = torch.where(c > 0, (count - d).clamp(min=0) / c.clamp(min=1), torch.zeros_like(c))
    bigram = discounted + backoff * unigram[test_next]
    return math.exp(-unigram[test_next].log().mean().item()), math.exp(-bigram.log().mean().item())


@torch.no_grad()
def generate_samples(model, tokenizer) -> list[dict]:
    prompts = ["The president spoke to the", "In the beginning God created", "This movie is"]
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        ids = torch.cat([torch.tensor([[tokenizer.bos_token_id]]), ids], dim=1)
        generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)
        out.append({"prompt": prompt, "greedy": text})
    return out


RUNS = {"pos": run_pos, "choice": run_choice, "causal": run_causal}


def run(config: HeadConfig) -> dict:
    config.threads = limit_threads(config.threads)
    hf_logging.disable_progress_bar()
    config.out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(config.base)
    started = time.perf_counter()
    figures, facts = RUNS[config.task](config, tokenizer)
    delta_dir = config.out / "delta"
    report = {
        "task": config.task,
        "delta_dir": str(delta_dir),
        "delta_bytes": (delta_dir / deltas.WEIGHTS).stat().st_size,
        **figures,
        **{k: round(v, 1) if isinstance(v, float) else v for k, v in facts.items()},
        "steps": config.steps,
        "wall_s": round(time.perf_counter() - started, 1),
        "threads": config.threads,
        "recipe": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }
    (config.out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def parse_args(argv: Sequence[str] | None = None) -> HeadConfig:
    defaults = HeadConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(RUNS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--delta", choices=["lora", "full"], default=defaults.delta)
    add_config_flags(parser, defaults, skip={"task", "out", "delta"}, kinds={"max_train": int, "max_test": int})
    return HeadConfig(**vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        report = run(config)
    except RplnError as error:
        print(f"finetune_heads: {error.message}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in report.items() if k != "recipe"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
