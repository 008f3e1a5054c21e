"""Extractive question answering: transformers 4.57.6's pipeline answers, with the trace of the best window."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..budgets import current
from ..capture import CaptureOptions, Trace, run_body
from ..load import LoadedModel
from ..tokens import Encoded, tokens_from_encoding
from .common import captured_pass, first_tokens, one_call_at_a_time, require_head
from .qa_spans import AnswerSpan, Decoding, QAWindows, decode_answers, make_qa_windows


@dataclass
class QAResult:
    """Answers best first, and what the model saw in the window that holds the best one."""

    answers: list[AnswerSpan]
    window: int  # index of the traced window
    windows: int  # how many windows the context needed
    start_logits: list[float]  # per token of the traced window, aligned with trace.tokens
    end_logits: list[float]
    answerable: list[bool]  # per token of the traced window: may start or end an answer (under the rules asked)
    trace: Trace
    notices: list[str] = field(default_factory=list)

    def to_pipeline(self) -> dict | list[dict]:
        """As transformers 4.x returned it: one dict for top_k=1, else a list."""
        rows = [{"score": a.score, "start": a.start, "end": a.end, "answer": a.answer} for a in self.answers]
        return rows[0] if len(rows) == 1 else rows


@one_call_at_a_time
def answer(
    loaded: LoadedModel,
    question: str,
    context: str,
    *,
    top_k: int = 1,
    doc_stride: int | None = None,
    max_answer_len: int = 15,
    max_seq_len: int | None = None,
    max_question_len: int = 64,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
    one_answer_per_span: bool = False,
    text_spans_only: bool = False,
    truncate_question: bool = False,
    options: CaptureOptions | None = None,
) -> QAResult:
    """Find the answer to `question` in `context`, read in overlapping windows when it is long.

    With the default keywords the answers, positions and scores are those of transformers 4.57.6's
    `pipeline("question-answering")` (see rpln_core.tasks.qa_spans for each rule): max_seq_len None is
    min(the tokenizer's limit, 384); doc_stride None is min(max_seq_len // 2, 128), a given one is used as given;
    max_question_len does nothing, as on 4.x's fast path. Opt-in, differing from 4.x: `one_answer_per_span`
    (each character span once, best score, instead of summing equal texts), `text_spans_only` (no answer
    starts or ends on `<s>` or a whitespace-only token, so no zero-score filler) and `truncate_question` (cut the
    question to max_question_len tokens). RplnError for bad keywords or input beyond rpln_core.budgets.
    """
    require_head(loaded, "qa")
    rules = Decoding(top_k, max_answer_len, handle_impossible_answer, align_to_words, one_answer_per_span,
                     text_spans_only)  # checked before the tokenizer or the model does any work
    windows = make_qa_windows(
        loaded.tokenizer,
        question,
        context,
        max_seq_len=max_seq_len,
        doc_stride=doc_stride,
        max_question_len=max_question_len,
        truncate_question=truncate_question,
        model_max_tokens=loaded.max_tokens,
    )
    decode = dataclasses.asdict(rules)
    if windows.count == 1:
        best = 0
    else:
        # Capturing every window would multiply the trace's memory: find the best window with plain batched
        # passes first, then trace that window alone.
        start, end = window_logits(loaded, windows)
        found = decode_answers(windows, start, end, **decode)
        best = found[0].window if found else 0

    logits, trace = captured_pass(loaded, window_input(loaded, windows, best), loaded.qa_outputs, options=options)
    start_best, end_best = logits[0].float().cpu().unbind(-1)
    if windows.count == 1:
        start, end = start_best[None], end_best[None]
    else:
        # The traced pass reads the window unpadded, as 4.x did: its logits are the ones to decode and to show.
        start[best, : len(start_best)], end[best, : len(end_best)] = start_best, end_best
    answers = decode_answers(windows, start, end, **decode)
    length = len(trace.tokens)
    return QAResult(
        answers=answers,
        window=best,
        windows=windows.count,
        start_logits=start_best.tolist(),
        end_logits=end_best.tolist(),
        answerable=windows.answerable(rules.text_spans_only)[best, :length].tolist(),
        trace=trace,
        notices=list(windows.notices) + list(trace.notices),  # trace: past the trained length, 8-bit attentions
    )


@torch.no_grad()
def window_logits(
    loaded: LoadedModel, windows: QAWindows, batch: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end logits [windows, seq] of every window, without capture, `batch` windows per pass.

    `batch` defaults to budgets.window_batch, so memory stays that of one batch for any context. All windows are
    padded to one length, so how they are batched does not change a bit of the result."""
    batch = current().window_batch if batch is None else batch
    starts, ends = [], []
    with loaded.lock:  # body and head in one hold: no other request's hooks fire in between
        for first in range(0, windows.count, batch):
            rows = slice(first, first + batch)
            inputs = {"input_ids": windows.input_ids[rows], "attention_mask": windows.attention_mask[rows]}
            start, end = loaded.qa_outputs(run_body(loaded, inputs)).float().cpu().unbind(-1)
            starts.append(start)
            ends.append(end)
    return torch.cat(starts), torch.cat(ends)


def window_input(loaded: LoadedModel, windows: QAWindows, index: int) -> Encoded:
    """Window `index` without its padding, as a one-row model input with readable tokens."""
    length = windows.lengths[index]
    inputs = {
        "input_ids": windows.input_ids[index : index + 1, :length],
        "attention_mask": windows.attention_mask[index : index + 1, :length],
    }
    tokens = tokens_from_encoding(windows.encoding, [windows.question, windows.context], loaded.tokenizer, row=index)
    return Encoded(inputs, first_tokens(tokens, length), [])
