"""Masked-LM data packing, masking and held-out evaluation, shared by scripts/train_mlm.py and the tests.

Evaluation masks with a fixed seed, so the model and the unigram baseline are scored on the same positions.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE_INDEX = -100  # positions the MLM loss skips


@dataclass
class PackedBlocks:
    """Token blocks `<s> ... </s>` right-padded to one width; `lengths` counts real tokens."""

    ids: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return self.ids.shape[0]

    def batch(self, indices: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) for the chosen blocks, trimmed to the longest."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        lengths = self.lengths[indices]
        width = int(lengths.max())
        attention_mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        return self.ids[indices, :width].clone(), attention_mask


@dataclass
class MlmEvaluation:
    """Held-out masked-token figures."""

    accuracy: float
    perplexity: float
    loss: float
    masked_tokens: int


def limit_threads(threads: int) -> int:
    """Cap torch and the tokenizers' thread pool at `threads` (never above the CPU count)."""
    threads = max(1, min(threads, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    # the Rust pool reads this when it first starts, so it must be set before any batch encoding
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    return threads


def tokenize_lines(tokenizer: PreTrainedTokenizerBase, lines: Sequence[str], batch_size: int = 2000) -> list[list[int]]:
    """Token ids of each line, without special tokens."""
    ids: list[list[int]] = []
    for start in range(0, len(lines), batch_size):
        # verbose=False: lines longer than the model limit are fine, packing cuts them into blocks
        batch = tokenizer(list(lines[start : start + batch_size]), add_special_tokens=False, verbose=False)
        ids.extend(batch["input_ids"])
    return ids


def pack_blocks(
    token_lists: Iterable[list[int]], max_length: int, bos_id: int, eos_id: int, pad_id: int
) -> PackedBlocks:
    """Concatenate lines (each closed by `</s>`, as RoBERTa separates documents) into full-length blocks."""
    stream = [token for tokens in token_lists if tokens for token in (*tokens, eos_id)]
    body = max_length - 2
    chunks = [stream[start : start + body] for start in range(0, len(stream), body)]
    ids = torch.full((len(chunks), max_length), pad_id, dtype=torch.long)
    lengths = torch.zeros(len(chunks), dtype=torch.long)
    for row, chunk in enumerate(chunks):
        block = [bos_id, *chunk, eos_id]
        ids[row, : len(block)] = torch.tensor(block)
        lengths[row] = len(block)
    return PackedBlocks(ids, lengths)


def pack_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> PackedBlocks:
    """Tokenize and pack texts with the tokenizer's own special ids."""
    return pack_blocks(
        tokenize_lines(tokenizer, texts),
        max_length,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    special_ids: Sequence[int],
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    mlm_probability: float = 0.15,
    mask_share: float = 0.8,
    random_share: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT corruption: pick `mlm_probability` of non-special tokens; of those, `mask_share` become
    `<mask>`, `random_share` a random regular token, the rest stay. Returns (inputs, labels)."""
    special = torch.isin(input_ids, torch.tensor(list(special_ids)))
    chosen = (torch.rand(input_ids.shape, generator=generator) < mlm_probability) & ~special
    labels = torch.where(chosen, input_ids, IGNORE_INDEX)
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (roll < mask_share)
    to_random = chosen & (roll >= mask_share) & (roll < mask_share + random_share)
    # random replacements never produce special tokens, which sit at the start of the vocabulary
    random_tokens = torch.randint(max(special_ids) + 1, vocab_size, input_ids.shape, generator=generator)
    inputs = torch.where(to_mask, mask_id, input_ids)
    inputs = torch.where(to_random, random_tokens, inputs)
    return inputs, labels


def masked_logits(
    model: PreTrainedModel, inputs: torch.Tensor, attention_mask: torch.Tensor, chosen: torch.Tensor
) -> torch.Tensor:
    """LM-head logits at the `chosen` positions only: the vocabulary projection of every position
    dominates a small model's cost, and the loss never looks at unmasked positions."""
    hidden = model.base_model(input_ids=inputs, attention_mask=attention_mask).last_hidden_state
    return model.lm_head(hidden[chosen])


def mlm_loss(
    model: PreTrainedModel, inputs: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy over masked tokens; equals the `labels=` loss of the HF MLM classes."""
    chosen = labels != IGNORE_INDEX
    logits = masked_logits(model, inputs, attention_mask, chosen)
    return torch.nn.functional.cross_entropy(logits.float(), labels[chosen])


def tokenizer_special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of every special token (never masked, never a random replacement)."""
    return sorted(set(tokenizer.all_special_ids))


def masked_eval_batches(
    blocks: PackedBlocks, tokenizer: PreTrainedTokenizerBase, batch_size: int, mask_seed: int, mlm_probability: float
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(inputs, attention_mask, labels) with every chosen token replaced by `<mask>`, as fill-mask sees it."""
    generator = torch.Generator().manual_seed(mask_seed)
    for start in range(0, len(blocks), batch_size):
        input_ids, attention_mask = blocks.batch(range(start, min(start + batch_size, len(blocks))))
        inputs, labels = mask_tokens(
            input_ids,
            special_ids=tokenizer_special_ids(tokenizer),
            mask_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer),
            generator=generator,
            mlm_probability=mlm_probability,
            mask_share=1.0,
            random_share=0.0,
        )
        yield inputs, attention_mask, labels


def summarise(correct: int, total_nll: float, count: int) -> MlmEvaluation:
    """Accuracy and perplexity from summed counts."""
    if count == 0:
        return MlmEvaluation(float("nan"), float("nan"), float("nan"), 0)
    loss = total_nll / count
    return MlmEvaluation(correct / count, math.exp(loss), loss, count)


@torch.no_grad()
def evaluate_mlm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str] | PackedBlocks,
    *,
    max_length: int = 128,
    batch_size: int = 32,
    mask_seed: int = 0,
    mlm_probability: float = 0.15,
) -> MlmEvaluation:
    """Held-out masked-token accuracy and perplexity (exp of mean NLL over masked tokens), fixed masking."""
    blocks = texts if isinstance(texts, PackedBlocks) else pack_texts(tokenizer, texts, max_length)
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    correct, total_nll, count = 0, 0.0, 0
    for inputs, attention_mask, labels in masked_eval_batches(
        blocks, tokenizer, batch_size, mask_seed, mlm_probability
    ):
        inputs, attention_mask, labels = inputs.to(device), attention_mask.to(device), labels.to(device)
        chosen = labels != IGNORE_INDEX
        targets = labels[chosen]
        picked = masked_logits(model, inputs, attention_mask, chosen).float()
        correct += int((picked.argmax(-1) == targets).sum())
        total_nll += float(torch.nn.functional.cross_entropy(picked, targets, reduction="sum"))
        count += int(chosen.sum())
    model.train(was_training)
    return summarise(correct, total_nll, count)


def unigram_counts(blocks: PackedBlocks, vocab_size: int, special_ids: Sequence[int]) -> torch.Tensor:
    """How often each regular token occurs in the (training) blocks; special tokens count zero."""
    real = torch.arange(blocks.ids.shape[1])[None, :] < blocks.lengths[:, None]
    counts = torch.bincount(blocks.ids[real], minlength=vocab_size).double()
    counts[list(special_ids)] = 0
    return counts


def unigram_baseline(
    train_counts: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str] | PackedBlocks,
    *,
    max_length: int = 128,
    batch_size: int = 32,
    mask_seed: int = 0,
    mlm_probability: float = 0.15,
) -> MlmEvaluation:
    """Always predict the most frequent training token; perplexity under add-one-smoothed unigram frequencies."""
    blocks = texts if isinstance(texts, PackedBlocks) else pack_texts(tokenizer, texts, max_length)
    # add-one over every regular vocabulary entry, so unseen held-out tokens keep a finite cost
    smoothed = train_counts + 1
    smoothed[tokenizer_special_ids(tokenizer)] = 0
    log_probs = (smoothed / smoothed.sum()).log()
    best = int(train_counts.argmax())
    correct, total_nll, count = 0, 0.0, 0
    for _, _, labels in masked_eval_batches(blocks, tokenizer, batch_size, mask_seed, mlm_probability):
        targets = labels[labels != IGNORE_INDEX]
        correct += int((targets == best).sum())
        total_nll += float(-log_probs[targets].sum())
        count += targets.numel()
    return summarise(correct, total_nll, count)
