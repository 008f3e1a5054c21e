"""Extractive question answering without a model: windows in, answer spans out.

`make_qa_windows` tokenizes (question, context) into overlapping windows and `decode_answers` turns the
model's start/end logits for those windows into answers. Together they reproduce transformers 4.x
`QuestionAnsweringPipeline` (fast-tokenizer path), which transformers 5 removed. Differences from 4.x,
all deliberate:

- An answer never starts or ends on `<s>` (4.x zeroed its score but could still return it when top_k
  exceeded the real candidates), nor on a whitespace-only token whose offsets are empty.
- Spans are ranked among allowed tokens before top_k is taken, so a window yields top_k real answers
  (4.x took top_k over all pairs, then dropped disallowed ones and could return fewer).
- The same character span is reported once: when overlapping windows (or two token spans widened to the
  same words) give the same (start, end), only the highest-scored occurrence is kept.
- `align_to_words` widens to the whole word even when a window cut the word in two (4.x widened only to
  the part of the word inside that window).
- Questions longer than `max_question_len` tokens are truncated (4.x ignored it on the fast path), and
  the stride is lowered when the question leaves too little room for it (the tokenizer would panic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from rpln_core.errors import RplnError

if TYPE_CHECKING:
    from transformers import BatchEncoding, PreTrainedTokenizerBase

# 4.x masked non-candidates with this finite value rather than -inf; keep it so scores match.
MASKED_LOGIT = -10000.0
CONTEXT_SEQUENCE = 1  # question first, so the context is the tokenizer's second sequence
CLS_INDEX = 0  # `<s>`: right padding puts it first in every window; its probabilities give the null score


@dataclass
class QAWindows:
    """The tokenized (question, context) windows the model runs on, plus what decoding needs."""

    input_ids: torch.Tensor  # [windows, seq] long, padded with tokenizer.pad_token_id
    attention_mask: torch.Tensor  # [windows, seq]
    allowed: np.ndarray  # [windows, seq] bool: token may start/end an answer
    offsets: list[list[tuple[int, int]]]  # per window, per token: char offsets into the context ((0,0) otherwise)
    encoding: "BatchEncoding"  # the tokenizer output, kept for word alignment
    question: str  # the question as fed to the model (after any truncation)
    context: str
    notices: list[str] = field(default_factory=list)


@dataclass
class AnswerSpan:
    """One answer: the 4.x pipeline's fields (char start/end into the context) and where it came from."""

    answer: str
    start: int
    end: int
    score: float
    window: int  # for the null answer: the window whose (minimum) null score it carries
    start_token: int  # -1 for the null answer
    end_token: int  # -1 for the null answer


def make_qa_windows(
    tokenizer: "PreTrainedTokenizerBase",
    question: str,
    context: str,
    *,
    max_seq_len: int = 384,
    doc_stride: int = 128,
    max_question_len: int = 64,
    model_max_tokens: int | None = None,
) -> QAWindows:
    """Tokenize question + context into overlapping windows of at most `max_seq_len` tokens.

    Raises RplnError for empty text, a non-fast tokenizer, or a `max_seq_len` that leaves no room for context.
    """
    for name, text in (("question", question), ("context", context)):
        if not isinstance(text, str):
            raise RplnError(f"The {name} must be text, got {type(text).__name__}.")
        if not text.strip():
            raise RplnError(f"The {name} is empty; please type some text.")
    if not getattr(tokenizer, "is_fast", False):
        # Character offsets and word ids only exist on the Rust-backed tokenizers.
        raise RplnError("Question answering needs a fast tokenizer (one that reports character offsets).")
    for name, value, minimum in (
        ("max_seq_len", max_seq_len, 1),
        ("doc_stride", doc_stride, 0),
        ("max_question_len", max_question_len, 1),
    ):
        if not isinstance(value, int) or value < minimum:
            raise RplnError(f"{name} must be an integer >= {minimum}, got {value!r}.")

    notices: list[str] = []
    if model_max_tokens is not None and max_seq_len > model_max_tokens:
        notices.append(f"max_seq_len lowered from {max_seq_len} to {model_max_tokens}, the model's limit.")
        max_seq_len = model_max_tokens

    question, question_tokens = _truncate_question(tokenizer, question, max_question_len, notices)

    specials = tokenizer.num_special_tokens_to_add(pair=True)
    room = max_seq_len - question_tokens - specials  # context tokens per window
    if room < 1:
        raise RplnError(
            f"max_seq_len={max_seq_len} is too small: the question alone takes {question_tokens} tokens plus "
            f"{specials} special tokens, leaving no room for the context. Raise max_seq_len to at least "
            f"{question_tokens + specials + 1} or shorten the question."
        )
    stride = min(doc_stride, max_seq_len // 2)  # 4.x's rule: overlap at most half a window
    if stride >= room:
        # The tokenizer panics (not a Python error) unless each window advances by at least one token.
        stride = room - 1
    if stride != doc_stride:
        notices.append(f"doc_stride lowered from {doc_stride} to {stride} to fit windows of {max_seq_len} tokens.")

    encoding = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_seq_len,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="longest",
        padding_side="right",  # keeps `<s>` at index 0 and question first, as 4.x assumed
        return_tensors="pt",
    )
    input_ids = encoding["input_ids"].long()
    windows, seq = input_ids.shape
    allowed = np.zeros((windows, seq), dtype=bool)
    offsets: list[list[tuple[int, int]]] = []
    raw_offsets = encoding["offset_mapping"].tolist()
    for w in range(windows):
        window_offsets = []
        for t, sequence_id in enumerate(encoding.sequence_ids(w)):
            start, end = raw_offsets[w][t]
            if sequence_id == CONTEXT_SEQUENCE:
                window_offsets.append((int(start), int(end)))
                # A lone byte-level space token has empty offsets: no text to start or end an answer on.
                allowed[w, t] = end > start
            else:
                window_offsets.append((0, 0))
        offsets.append(window_offsets)

    return QAWindows(
        input_ids=input_ids,
        attention_mask=encoding["attention_mask"],
        allowed=allowed,
        offsets=offsets,
        encoding=encoding,
        question=question,
        context=context,
        notices=notices,
    )


def decode_answers(
    windows: QAWindows,
    start_logits: np.ndarray | torch.Tensor,
    end_logits: np.ndarray | torch.Tensor,
    *,
    top_k: int = 1,
    max_answer_len: int = 15,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
) -> list[AnswerSpan]:
    """The top_k answers, best first, from [windows, seq] start/end logits, scored as in 4.x.

    A char span found in several overlapping windows is returned once, with its highest score.
    """
    if not isinstance(top_k, int) or top_k < 1:
        raise RplnError(f"top_k must be an integer >= 1, got {top_k!r}.")
    if not isinstance(max_answer_len, int) or max_answer_len < 1:
        raise RplnError(f"max_answer_len must be an integer >= 1, got {max_answer_len!r}.")
    shape = tuple(windows.input_ids.shape)
    start_logits = _as_logit_matrix(start_logits, shape, "start_logits")
    end_logits = _as_logit_matrix(end_logits, shape, "end_logits")
    n_windows, seq = shape

    # As 4.x: the softmax runs over context tokens and `<s>`; question, separators and padding get no mass.
    in_softmax = _context_mask(windows)
    in_softmax[:, CLS_INDEX] = True
    p_start = _masked_softmax(start_logits, in_softmax)
    p_end = _masked_softmax(end_logits, in_softmax)
    null_scores = p_start[:, CLS_INDEX] * p_end[:, CLS_INDEX]

    # Spans with start <= end < start + max_answer_len (4.x's triu/tril band).
    offset = np.arange(seq)[None, :] - np.arange(seq)[:, None]
    band = (offset >= 0) & (offset < max_answer_len)
    word_chars = _word_char_spans(windows) if align_to_words else {}

    best: dict[tuple[int, int], AnswerSpan] = {}
    for w in range(n_windows):
        allowed = windows.allowed[w]
        valid = band & allowed[:, None] & allowed[None, :]
        flat = np.flatnonzero(valid)
        scores = np.outer(p_start[w], p_end[w]).ravel()[flat]
        # Stable sort: among equal scores the earlier (start, end) wins, deterministically.
        order = np.argsort(-scores, kind="stable")
        seen: set[tuple[int, int]] = set()
        for i in order:
            s, e = divmod(int(flat[i]), seq)
            chars = _span_chars(windows, w, s, e, word_chars)
            if chars in seen:  # several token spans widened to the same words: keep the best one
                continue
            seen.add(chars)
            score = float(scores[i])
            if chars not in best or score > best[chars].score:
                best[chars] = AnswerSpan(
                    answer=windows.context[chars[0] : chars[1]],
                    start=chars[0],
                    end=chars[1],
                    score=score,
                    window=w,
                    start_token=s,
                    end_token=e,
                )
            if len(seen) == top_k:
                break

    answers = sorted(best.values(), key=lambda a: a.score, reverse=True)
    if handle_impossible_answer:
        # 4.x takes the MIN over windows: the question counts as unanswerable only as much as its most
        # confident window says so. Appended last so that ties go to real answers, as in 4.x.
        null_window = int(np.argmin(null_scores))
        answers.append(AnswerSpan("", 0, 0, float(null_scores[null_window]), null_window, -1, -1))
        answers = sorted(answers, key=lambda a: a.score, reverse=True)
    return answers[:top_k]


def _truncate_question(
    tokenizer: "PreTrainedTokenizerBase", question: str, max_question_len: int, notices: list[str]
) -> tuple[str, int]:
    """Cut the question text to at most `max_question_len` tokens; return it and its token count."""
    encoded = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    original = len(encoded["input_ids"])
    while len(encoded["input_ids"]) > max_question_len:
        # Cut where the first dropped token starts (a whole emoji goes, not half of its bytes); re-tokenize
        # because BPE of a cut word can differ, and always shorten so the loop ends.
        cut = encoded["offset_mapping"][max_question_len][0]
        shorter = question[:cut].rstrip()
        question = shorter if len(shorter) < len(question) else question[:-1]
        if not question.strip():
            raise RplnError("The question could not be truncated to max_question_len tokens; please shorten it.")
        encoded = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    count = len(encoded["input_ids"])
    if count < original:
        notices.append(f"question truncated to {count} tokens (max_question_len={max_question_len}): {question!r}")
    return question, count


def _as_logit_matrix(logits: np.ndarray | torch.Tensor, shape: tuple[int, int], name: str) -> np.ndarray:
    """Logits as a float64 [windows, seq] array; a 1-D vector is accepted for a single window."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(logits, dtype=np.float64)
    if array.ndim == 1 and shape[0] == 1:
        array = array[None, :]
    if array.shape != shape:
        raise RplnError(f"{name} has shape {array.shape}, expected {shape} (windows, tokens).")
    return array


def _context_mask(windows: QAWindows) -> np.ndarray:
    """[windows, seq] bool: the token belongs to the context (padding and specials excluded)."""
    n_windows, seq = windows.input_ids.shape
    mask = np.zeros((n_windows, seq), dtype=bool)
    for w in range(n_windows):
        mask[w] = [sid == CONTEXT_SEQUENCE for sid in windows.encoding.sequence_ids(w)]
    return mask


def _masked_softmax(logits: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Row-wise softmax with tokens outside `keep` set to 4.x's -10000 first."""
    masked = np.where(keep, logits, MASKED_LOGIT)
    shifted = np.exp(masked - masked.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _word_char_spans(windows: QAWindows) -> dict[int, tuple[int, int]]:
    """Context word id -> (first char, last char + 1), gathered over ALL windows so cut words stay whole."""
    spans: dict[int, tuple[int, int]] = {}
    for w, window_offsets in enumerate(windows.offsets):
        word_ids = windows.encoding.word_ids(w)
        for t, sequence_id in enumerate(windows.encoding.sequence_ids(w)):
            start, end = window_offsets[t]
            if sequence_id != CONTEXT_SEQUENCE or word_ids[t] is None or end <= start:
                continue
            known = spans.get(word_ids[t])
            spans[word_ids[t]] = (start, end) if known is None else (min(known[0], start), max(known[1], end))
    return spans


def _span_chars(
    windows: QAWindows, w: int, s: int, e: int, word_chars: dict[int, tuple[int, int]]
) -> tuple[int, int]:
    """Char (start, end) of tokens s..e in window w, widened to whole words when `word_chars` is given."""
    start, end = windows.offsets[w][s][0], windows.offsets[w][e][1]
    if word_chars:
        start_word = windows.encoding.token_to_word(w, s)
        end_word = windows.encoding.token_to_word(w, e)
        # Tokenizers without word ids (None) keep the plain token offsets, as 4.x did.
        if start_word in word_chars:
            start = word_chars[start_word][0]
        if end_word in word_chars:
            end = word_chars[end_word][1]
    return start, end
