"""Extractive question answering without a model: windows in, answer spans out.

`make_qa_windows` tokenizes (question, context) into overlapping windows and `decode_answers` turns the model's
start/end logits for those windows into answers. With their default keywords they reproduce transformers 4.57.6's
`QuestionAnsweringPipeline` on its fast-tokenizer path (transformers 5 removed it): the same answers, character
positions and scores, compared with the real pipeline case by case in tests/test_qa_4x.py. Rule by rule, as 4.x:

- Windows hold `max_seq_len` tokens (default: min(the tokenizer's model_max_length, 384)), question first. Without
  `doc_stride` consecutive windows share min(max_seq_len // 2, 128) tokens; a `doc_stride` given is used as given.
- `max_question_len` is accepted and has no effect: 4.x applied it only on the slow-tokenizer path.
- Per window, a float32 softmax of the start logits and one of the end logits over the context tokens and `<s>`
  (every other token set to -10000 first). The null score is p_start(<s>) * p_end(<s>); then `<s>` is set to 0. A
  span's score is p_start * p_end, for start <= end < start + max_answer_len, and 0 for any other pair.
- Candidates: per window, the top_k * 2 + 10 best (start, end) pairs (just top_k without align_to_words) over ALL
  token pairs, picked with numpy's argmax / argpartition / argsort as 4.x did, so that ties among zero scores fall
  the same way; then pairs with either end outside the context and `<s>` are dropped. A one-word context thus yields
  zero-score answers: a pair starting on `<s>` reads from character 0 to its end token, one ending on `<s>` or
  ending before it starts is "" (and may have start > end).
- Positions: with align_to_words, from the start token's word's first character to the end token's word's last,
  words as the tokenizer sees them inside that window (a word cut by the window edge is the part inside it); if
  either token has no word (`<s>`), the plain token offsets. Whitespace-only tokens are candidates like any other:
  a lone space token's empty offsets sit on the space before the next word, so its answers begin with a space.
- Answers whose text is equal ignoring case are one answer, wherever they sit: scores summed (over windows too,
  so a score may exceed 1), the position of the first kept (windows in order, each window's candidates best first).
- With handle_impossible_answer, the null answer ("", 0, 0) carries the MINIMUM null score over windows and is
  ranked with the rest (ties go to real answers). The top_k best are returned.

Opt-in keywords that differ from 4.x (all off by default):
- `one_answer_per_span=True`: answers are character spans, each reported once with its best score over windows
  and token pairs, instead of summing the scores of equal texts ("Paris" and "paris" stay two answers).
- `text_spans_only=True`: an answer starts and ends on a context token with visible text (never `<s>`, never a
  whitespace-only token), and candidates are taken among such spans only, so no zero-score filler comes back.
- `truncate_question=True`: a question longer than `max_question_len` tokens is cut to that length, with a notice.

Where 4.x failed, we refuse with an RplnError naming the keyword at fault: doc_stride > max_seq_len (4.x raised a
ValueError); a given doc_stride at least the context tokens a window holds, when the context needs several windows
(4.x's tokenizer panicked); a max_seq_len that leaves the question no room for context (the tokenizer raised). Two
such cases are answered with a notice instead: the default stride is lowered to fit beside a long question, and a
max_seq_len beyond the model's positions is lowered to them (4.x's model crashed). Budgets (rpln_core.budgets)
bound the question, the context and the number of windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..budgets import check_length, check_top_k, current
from ..checks import check_flag, whole_number
from ..errors import RplnError
from ..tokens import check_text

if TYPE_CHECKING:
    from transformers import BatchEncoding, PreTrainedTokenizerBase

# 4.x masked non-candidates with this finite value rather than -inf; keep it so scores match.
MASKED_LOGIT = np.float32(-10000.0)
CONTEXT_SEQUENCE = 1  # question first, so the context is the tokenizer's second sequence
CLS_INDEX = 0  # `<s>`: right padding puts it first in every window; its probabilities give the null score
DEFAULT_MAX_SEQ_LEN = 384  # 4.x's window when the tokenizer allows more
DEFAULT_MAX_STRIDE = 128  # 4.x's stride when none is given, if half a window is more
LARGEST = 2**31 - 1  # any count a keyword may take: bounds that only refuse nonsense such as 10**100


@dataclass
class QAWindows:
    """The tokenized (question, context) windows the model runs on, plus what decoding needs."""

    input_ids: torch.Tensor  # [windows, seq] long, right-padded with tokenizer.pad_token_id to the longest window
    attention_mask: torch.Tensor  # [windows, seq]
    lengths: list[int]  # per window: its tokens before padding (4.x ran each window unpadded)
    allowed: np.ndarray  # [windows, seq] bool: a context token, so it may start or end an answer
    blank: np.ndarray  # [windows, seq] bool: a context token whose text is whitespace only (or empty)
    offsets: list[list[tuple[int, int]]]  # per window, per token: char offsets into the context ((0,0) otherwise)
    encoding: BatchEncoding  # the tokenizer output, kept for word alignment
    question: str  # the question as fed to the model (after truncate_question)
    context: str
    doc_stride: int  # the overlap in tokens between consecutive windows, as used
    notices: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.input_ids.shape[0])

    def answerable(self, text_spans_only: bool = False) -> np.ndarray:
        """[windows, seq] bool: the token may start or end an answer with a score above zero under these rules."""
        return self.allowed & ~self.blank if text_spans_only else self.allowed.copy()


@dataclass
class AnswerSpan:
    """One answer: the 4.x pipeline's fields (char start/end into the context) and where it came from."""

    answer: str
    start: int
    end: int
    score: float
    window: int  # where the kept occurrence is; for the null answer, the window whose (minimum) null score it is
    start_token: int  # -1 for the null answer
    end_token: int  # -1 for the null answer


@dataclass(frozen=True)
class Decoding:
    """How the windows' logits become answers: 4.x's keywords, then our opt-in rules (see the module docstring)."""

    top_k: int = 1
    max_answer_len: int = 15  # in tokens
    handle_impossible_answer: bool = False
    align_to_words: bool = True
    one_answer_per_span: bool = False
    text_spans_only: bool = False

    def __post_init__(self):
        # Checked here, before any model pass: a string, NaN, 2.5 or True is refused with the keyword's name.
        object.__setattr__(self, "top_k", check_top_k(self.top_k))
        object.__setattr__(self, "max_answer_len", whole_number(self.max_answer_len, "max_answer_len", 1, LARGEST))
        for name in ("handle_impossible_answer", "align_to_words", "one_answer_per_span", "text_spans_only"):
            check_flag(getattr(self, name), name)

    @property
    def candidates_per_window(self) -> int:
        # 4.x asked each window for more pairs than top_k when aligning, as several pairs widen to the same words.
        return self.top_k * 2 + 10 if self.align_to_words else self.top_k


def make_qa_windows(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    context: str,
    *,
    max_seq_len: int | None = None,
    doc_stride: int | None = None,
    max_question_len: int = 64,
    truncate_question: bool = False,
    model_max_tokens: int | None = None,
) -> QAWindows:
    """Tokenize question + context into windows of at most `max_seq_len` tokens overlapping by `doc_stride`.

    None for max_seq_len / doc_stride means 4.x's defaults. Raises RplnError for empty or over-budget text, a
    non-fast tokenizer, keywords of the wrong type, a window too small for the question, a given doc_stride the
    windows cannot advance by, or a context needing more than `budgets.max_windows` windows.
    """
    check_text(question, "question")
    if not isinstance(context, str):
        raise RplnError(f"The context must be text, got {type(context).__name__}.")
    if not context.strip():
        raise RplnError("The context is empty: type or paste the text to search for the answer.")
    check_length(context, "context", current().max_context_chars)  # before any tokenizing: refused in microseconds
    if max_seq_len is not None:
        max_seq_len = whole_number(max_seq_len, "max_seq_len", 1, LARGEST)
    if doc_stride is not None:
        doc_stride = whole_number(doc_stride, "doc_stride", 0, LARGEST)
    max_question_len = whole_number(max_question_len, "max_question_len", 1, LARGEST)
    check_flag(truncate_question, "truncate_question")
    if not getattr(tokenizer, "is_fast", False):
        # Character offsets and word ids only exist on the Rust-backed tokenizers.
        raise RplnError("Question answering needs a fast tokenizer (one that reports character offsets).")

    notices: list[str] = []
    max_seq_len = _window_size(tokenizer, max_seq_len, model_max_tokens, notices)
    if truncate_question:
        question = _truncate_question(tokenizer, question, max_question_len, notices)
    question_tokens = len(tokenizer(question, add_special_tokens=False, verbose=False)["input_ids"])
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    room = max_seq_len - question_tokens - specials  # context tokens per window
    if room < 1:
        raise RplnError(
            f"max_seq_len={max_seq_len} is too small: the question alone takes {question_tokens} tokens plus "
            f"{specials} special tokens, leaving no room for the context. Raise max_seq_len to at least "
            f"{question_tokens + specials + 1} or shorten the question."
        )
    # Counted alone (BPE never merges across the pair), so a huge window count is refused before windowing.
    context_tokens = len(tokenizer(context, add_special_tokens=False, verbose=False)["input_ids"])
    stride = _stride(doc_stride, max_seq_len, room, context_tokens > room, notices)
    needed = count_windows(context_tokens, room, stride)
    if needed > current().max_windows:
        raise RplnError(
            f"The context needs {needed:,} windows of {max_seq_len} tokens (overlapping by {stride}); one question "
            f"may read at most {current().max_windows}. Shorten the context, or raise max_seq_len (up to the "
            f"model's limit) or lower doc_stride so that fewer windows cover it."
        )

    encoding = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_seq_len,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="longest",  # every window as long as the longest, so batching can never change a window's logits
        padding_side="right",  # keeps `<s>` at index 0 and question first, as 4.x assumed
        return_tensors="pt",
    )
    input_ids = encoding["input_ids"].long()
    windows, seq = input_ids.shape
    allowed = np.zeros((windows, seq), dtype=bool)
    blank = np.zeros((windows, seq), dtype=bool)
    offsets: list[list[tuple[int, int]]] = []
    raw_offsets = encoding["offset_mapping"].tolist()
    for w in range(windows):
        window_offsets = []
        for t, sequence_id in enumerate(encoding.sequence_ids(w)):
            if sequence_id == CONTEXT_SEQUENCE:
                start, end = (int(x) for x in raw_offsets[w][t])
                window_offsets.append((start, end))
                allowed[w, t] = True
                # A lone byte-level space has empty offsets; a tab or newline token has text but nothing to read.
                blank[w, t] = not context[start:end].strip()
            else:
                window_offsets.append((0, 0))
        offsets.append(window_offsets)

    return QAWindows(
        input_ids=input_ids,
        attention_mask=encoding["attention_mask"],
        lengths=[int(n) for n in encoding["attention_mask"].sum(dim=1)],
        allowed=allowed,
        blank=blank,
        offsets=offsets,
        encoding=encoding,
        question=question,
        context=context,
        doc_stride=stride,
        notices=notices,
    )


def count_windows(context_tokens: int, room: int, stride: int) -> int:
    """How many windows the tokenizer makes: `room` context tokens each, each one `room - stride` after the last."""
    if context_tokens <= room:
        return 1
    return 1 + math.ceil((context_tokens - room) / (room - stride))


def decode_answers(
    windows: QAWindows,
    start_logits: np.ndarray | torch.Tensor,
    end_logits: np.ndarray | torch.Tensor,
    *,
    top_k: int = 1,
    max_answer_len: int = 15,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
    one_answer_per_span: bool = False,
    text_spans_only: bool = False,
) -> list[AnswerSpan]:
    """The top_k answers, best first, from [windows, seq] start/end logits: 4.x's, unless an opt-in rule is on."""
    rules = Decoding(top_k, max_answer_len, handle_impossible_answer, align_to_words, one_answer_per_span,
                     text_spans_only)
    shape = tuple(windows.input_ids.shape)
    start_logits = _as_logit_matrix(start_logits, shape, "start_logits")
    end_logits = _as_logit_matrix(end_logits, shape, "end_logits")
    answerable = windows.answerable(rules.text_spans_only)
    # 4.x's softmax runs over the context and `<s>`: question, separators and padding get no mass.
    in_softmax = windows.allowed.copy()
    in_softmax[:, CLS_INDEX] = True

    found = _AnswerList(one_per_span=rules.one_answer_per_span)
    null_scores = []
    for w, length in enumerate(windows.lengths):
        # Each window on its own, unpadded, as 4.x ran it: the shape of the score matrix decides how ties fall.
        p_start = _masked_softmax(start_logits[w, :length], in_softmax[w, :length])
        p_end = _masked_softmax(end_logits[w, :length], in_softmax[w, :length])
        null_scores.append(float(p_start[CLS_INDEX] * p_end[CLS_INDEX]))
        p_start[CLS_INDEX] = p_end[CLS_INDEX] = 0.0
        scores = _span_scores(p_start, p_end, rules.max_answer_len)
        if rules.text_spans_only:
            pairs = _best_text_pairs(scores, answerable[w, :length], rules.candidates_per_window)
        else:
            pairs = _best_pairs(scores, answerable[w, :length], rules.candidates_per_window)
        for s, e in pairs:
            start, end = _span_chars(windows, w, s, e, rules.align_to_words)
            found.add(AnswerSpan(windows.context[start:end], start, end, float(scores[s, e]), w, s, e))

    answers = found.answers
    if rules.handle_impossible_answer:
        # 4.x takes the MIN over windows: the question counts as unanswerable only as much as its most
        # confident window says so. Appended last so that ties go to real answers, as in 4.x.
        null_window = int(np.argmin(null_scores))
        answers.append(AnswerSpan("", 0, 0, null_scores[null_window], null_window, -1, -1))
    # sorted() is stable, so equal scores keep the order found, as in 4.x.
    return sorted(answers, key=lambda a: a.score, reverse=True)[: rules.top_k]


class _AnswerList:
    """Answers in the order found, merged as 4.x merged them (equal text, summed) or, opt-in, by character span."""

    def __init__(self, one_per_span: bool):
        self.one_per_span = one_per_span
        self.answers: list[AnswerSpan] = []
        self._index: dict[object, AnswerSpan] = {}

    def add(self, span: AnswerSpan) -> None:
        key = (span.start, span.end) if self.one_per_span else span.answer.lower()
        known = self._index.get(key)
        if known is None:
            self._index[key] = span
            self.answers.append(span)
        elif self.one_per_span:
            if span.score > known.score:  # keep the best occurrence, where it was found
                for name in ("score", "window", "start_token", "end_token"):
                    setattr(known, name, getattr(span, name))
        else:
            known.score += span.score  # 4.x: "Paris" and "paris" are one answer at the first one's position


def _window_size(
    tokenizer: PreTrainedTokenizerBase, max_seq_len: int | None, model_max_tokens: int | None, notices: list[str]
) -> int:
    """max_seq_len as used: 4.x's default from the tokenizer, lowered to the model's positions (where 4.x crashed)."""
    if max_seq_len is None:
        max_seq_len = min(int(min(tokenizer.model_max_length, LARGEST)), DEFAULT_MAX_SEQ_LEN)
    if model_max_tokens is not None and max_seq_len > model_max_tokens:
        notices.append(f"max_seq_len lowered from {max_seq_len} to {model_max_tokens}, the model's limit.")
        max_seq_len = model_max_tokens
    return max_seq_len


def _stride(doc_stride: int | None, max_seq_len: int, room: int, several: bool, notices: list[str]) -> int:
    """The overlap between windows: 4.x's default when not given, else `doc_stride` as given, or a refusal."""
    if doc_stride is not None and doc_stride > max_seq_len:
        raise RplnError(f"doc_stride={doc_stride} is larger than max_seq_len={max_seq_len}; use a smaller doc_stride.")
    stride = min(max_seq_len // 2, DEFAULT_MAX_STRIDE) if doc_stride is None else doc_stride
    if several and stride >= room:
        # The tokenizer panics (not a Python error) unless each window advances by at least one token.
        if doc_stride is not None:
            raise RplnError(
                f"doc_stride={doc_stride} is too large: after the question, each window of {max_seq_len} tokens "
                f"has room for {room} context tokens, and consecutive windows must differ by at least one. Use "
                f"doc_stride of at most {room - 1}, leave it unset, or shorten the question."
            )
        notices.append(
            f"doc_stride lowered from {stride} to {room - 1}: the question leaves {room} context tokens per window."
        )
        stride = room - 1
    return stride


def _truncate_question(
    tokenizer: PreTrainedTokenizerBase, question: str, max_question_len: int, notices: list[str]
) -> str:
    """The question cut to at most `max_question_len` tokens (opt-in: 4.x's fast path ignored max_question_len)."""
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
    return question


def _as_logit_matrix(logits: np.ndarray | torch.Tensor, shape: tuple[int, int], name: str) -> np.ndarray:
    """Logits as a float32 [windows, seq] array (4.x's precision); a 1-D vector is accepted for a single window."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(logits, dtype=np.float32)
    if array.ndim == 1 and shape[0] == 1:
        array = array[None, :]
    if array.shape != shape:
        raise RplnError(f"{name} has shape {array.shape}, expected {shape} (windows, tokens).")
    return array


def _masked_softmax(logits: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Softmax of one window's float32 logits with tokens outside `keep` set to 4.x's -10000 first."""
    masked = np.where(keep, logits, MASKED_LOGIT)
    shifted = np.exp(masked - masked.max())
    return shifted / shifted.sum()


def _span_scores(p_start: np.ndarray, p_end: np.ndarray, max_answer_len: int) -> np.ndarray:
    """[seq, seq] float32: p_start[s] * p_end[e] where s <= e < s + max_answer_len (4.x's band), else 0."""
    scores = np.outer(p_start, p_end)
    return np.tril(np.triu(scores), max_answer_len - 1)


def _best_pairs(scores: np.ndarray, answerable: np.ndarray, count: int) -> list[tuple[int, int]]:
    """4.x's candidates: the `count` best of ALL token pairs, best first, then those ending in the context or `<s>`.

    Chosen with the numpy calls 4.x used (argmax for one, else argpartition then argsort) on a matrix of the same
    shape, so that equal scores, above all the zeros a short window runs into, come out in 4.x's order."""
    flat = -scores.ravel()  # negated as 4.x did: the sorts see the same values
    if count == 1:
        picked = np.array([np.argmax(scores.ravel())])
    elif flat.size <= count:  # 4.x: argsort when fewer; at exactly `count` its argpartition raised instead
        picked = np.argsort(flat)
    else:
        picked = np.argpartition(flat, count)[:count]
        picked = picked[np.argsort(flat[picked])]
    ends_ok = answerable.copy()
    ends_ok[CLS_INDEX] = True  # a span from or to `<s>` survives 4.x's filter (its score is 0)
    pairs = (divmod(int(i), scores.shape[1]) for i in picked)
    return [(s, e) for s, e in pairs if ends_ok[s] and ends_ok[e]]


def _best_text_pairs(scores: np.ndarray, answerable: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Opt-in candidates: the `count` best pairs among spans of answerable tokens inside the band, best first."""
    valid = np.outer(answerable, answerable) & (scores > 0)  # zero outside the band, so inside it
    flat = np.flatnonzero(valid)
    # Stable sort: among equal scores the earlier (start, end) wins, deterministically.
    order = np.argsort(-scores.ravel()[flat], kind="stable")[:count]
    return [divmod(int(flat[i]), scores.shape[1]) for i in order]


def _span_chars(windows: QAWindows, w: int, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
    """Char (start, end) of tokens s..e of window w: widened to whole words (as the window sees them) if asked."""
    if align_to_words:
        window = windows.encoding.encodings[w]  # the tokenizer's own record of words in this window
        first, last = _word_chars(window, s), _word_chars(window, e)
        # 4.x fell back to plain offsets for BOTH ends when either token has no word (`<s>`).
        if first is not None and last is not None:
            return first[0], last[1]
    return windows.offsets[w][s][0], windows.offsets[w][e][1]


def _word_chars(window, token: int) -> tuple[int, int] | None:
    """Char span in the context of the word holding `token`, within this window; None for a token with no word."""
    word = window.token_to_word(token)
    return None if word is None else window.word_to_chars(word, CONTEXT_SEQUENCE)

