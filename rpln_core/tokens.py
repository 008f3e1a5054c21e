"""Tokenising an input the way the model sees it, and showing tokens the way a reader should."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from .budgets import check_length
from .errors import RplnError


@dataclass
class Tokens:
    """The tokens of one model input, aligned with the user's text."""

    ids: list[int]
    strings: list[str]  # what a reader sees: the text span of the token, invisible characters spelled out
    offsets: list[tuple[int, int]]  # character [start, end) into the text of `segments[i]`; (0, 0) for specials
    special: list[bool]
    segments: list[int | None]  # 0: first text, 1: second text (pair or QA context), None: special token

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Encoded:
    """Model inputs for one text (or text pair) with its tokens and any notice about truncation."""

    inputs: BatchEncoding  # input_ids and attention_mask as [1, tokens] tensors
    tokens: Tokens
    notices: list[str] = field(default_factory=list)


def check_text(text: str, what: str = "text") -> str:
    """Refuse text that gives the model nothing to read, or more than one request may ask it to read."""
    if not isinstance(text, str):
        raise RplnError(f"The {what} must be text, got {type(text).__name__}.")
    if not text.strip():
        raise RplnError(f"The {what} is empty: type some words first.")
    return check_length(text, what)


def encode(
    tokenizer: PreTrainedTokenizerBase, text: str, text_pair: str | None = None, *, max_tokens: int
) -> Encoded:
    """Tokenise `text` (and `text_pair`), cutting to the model's maximum with a visible notice.

    As pipeline("text-classification") does: None means no pair, and any string goes to the tokenizer as the pair.
    A whitespace-only pair is a second segment of space tokens, which changes the scores; an empty one the
    tokenizer itself drops (transformers 5's fast tokenizers test `if text_pair`), and the pipeline with it."""
    check_text(text)
    if text_pair is not None:
        if not isinstance(text_pair, str):
            raise RplnError(f"The second text must be text, got {type(text_pair).__name__}.")
        check_length(text_pair, "second text")
    full_length = len(tokenizer(text, text_pair)["input_ids"])
    inputs = tokenizer(
        text,
        text_pair,
        truncation=True,
        max_length=max_tokens,
        return_tensors="pt",
        return_offsets_mapping=True,
    )
    notices = []
    if full_length > max_tokens:
        notices.append(
            f"The input is {full_length} tokens long; this model reads at most {max_tokens}, "
            f"so only the first {max_tokens} tokens were used."
        )
    texts = [text, text_pair]
    tokens = tokens_from_encoding(inputs, texts, tokenizer)
    inputs.pop("offset_mapping")
    return Encoded(inputs, tokens, notices)


def tokens_from_encoding(
    encoding: BatchEncoding, texts: list[str | None], tokenizer: PreTrainedTokenizerBase, row: int = 0
) -> Tokens:
    """Readable tokens of row `row` of a fast-tokenizer encoding made with return_offsets_mapping."""
    ids = [int(i) for i in _row(encoding["input_ids"], row)]
    offsets = [tuple(int(x) for x in pair) for pair in _row(encoding["offset_mapping"], row)]
    segments = list(encoding.sequence_ids(row))
    special_ids = set(tokenizer.all_special_ids)
    special = [segment is None or token_id in special_ids for token_id, segment in zip(ids, segments)]
    strings = []
    for token_id, (start, end), segment, is_special in zip(ids, offsets, segments, special):
        if is_special:
            strings.append(tokenizer.convert_ids_to_tokens(token_id))
        else:
            strings.append(readable(texts[segment][start:end]))
    return Tokens(ids, strings, offsets, special, segments)


def readable(span: str) -> str:
    """A token's text with characters a reader cannot see (controls, zero-width, bare spaces) named."""
    if span == "":
        return "␣"  # a byte-level token that holds only the space before an invisible character
    out = []
    for char in span:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Zl", "Zp") or (category == "Zs" and len(span) == 1):
            out.append(f"<U+{ord(char):04X}>")
        else:
            out.append(char)
    return "".join(out)


def _row(values, row: int) -> list:
    return values[row].tolist() if isinstance(values, torch.Tensor) else list(values[row])
