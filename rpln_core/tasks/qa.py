"""Extractive question answering: transformers 4.x pipeline semantics, with the trace of the best window."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..capture import CaptureOptions, Trace, run_body
from ..load import LoadedModel
from ..tokens import Encoded, tokens_from_encoding
from .common import captured_pass, require_head
from .qa_spans import AnswerSpan, QAWindows, decode_answers, make_qa_windows


@dataclass
class QAResult:
    """Answers best first, and what the model saw in the window that holds the best one."""

    answers: list[AnswerSpan]
    window: int  # index of the traced window
    windows: int  # how many windows the context needed
    start_logits: list[float]  # per token of the traced window, aligned with trace.tokens
    end_logits: list[float]
    answerable: list[bool]  # per token of the traced window: may start or end an answer
    trace: Trace
    notices: list[str] = field(default_factory=list)

    def to_pipeline(self) -> dict | list[dict]:
        """As transformers 4.x returned it: one dict for top_k=1, else a list."""
        rows = [{"score": a.score, "start": a.start, "end": a.end, "answer": a.answer} for a in self.answers]
        return rows[0] if len(rows) == 1 else rows


def answer(
    loaded: LoadedModel,
    question: str,
    context: str,
    *,
    top_k: int = 1,
    doc_stride: int = 128,
    max_answer_len: int = 15,
    max_seq_len: int = 384,
    max_question_len: int = 64,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
    options: CaptureOptions | None = None,
) -> QAResult:
    """Find the answer to `question` in `context`; long contexts are read in overlapping windows."""
    require_head(loaded, "qa_outputs")
    windows = make_qa_windows(
        loaded.tokenizer,
        question,
        context,
        max_seq_len=max_seq_len,
        doc_stride=doc_stride,
        max_question_len=max_question_len,
        model_max_tokens=loaded.max_tokens,
    )
    count = windows.input_ids.shape[0]
    decode = dict(
        top_k=top_k,
        max_answer_len=max_answer_len,
        handle_impossible_answer=handle_impossible_answer,
        align_to_words=align_to_words,
    )
    if count == 1:
        best = 0
    else:
        # Capturing every window would multiply the trace's memory: find the best window with a
        # plain batched pass first, then trace that window alone.
        start, end = window_logits(loaded, windows)
        best = decode_answers(windows, start, end, **decode)[0].window

    logits, trace = captured_pass(loaded, window_input(loaded, windows, best), loaded.qa_outputs, options=options)
    start_best, end_best = logits[0].float().unbind(-1)
    if count == 1:
        start, end = start_best[None], end_best[None]
    else:
        start[best, : len(start_best)], end[best, : len(end_best)] = start_best, end_best
    answers = decode_answers(windows, start, end, **decode)
    length = len(trace.tokens)
    return QAResult(
        answers=answers,
        window=best,
        windows=count,
        start_logits=start_best.tolist(),
        end_logits=end_best.tolist(),
        answerable=windows.allowed[best, :length].tolist(),
        trace=trace,
        notices=list(windows.notices),
    )


@torch.no_grad()
def window_logits(loaded: LoadedModel, windows: QAWindows) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end logits [windows, seq] of every window, without capture."""
    hidden = run_body(loaded, {"input_ids": windows.input_ids, "attention_mask": windows.attention_mask})
    start, end = loaded.qa_outputs(hidden).float().unbind(-1)
    return start, end


def window_input(loaded: LoadedModel, windows: QAWindows, index: int) -> Encoded:
    """Window `index` without its padding, as a one-row model input with readable tokens."""
    length = int(windows.attention_mask[index].sum())
    inputs = {
        "input_ids": windows.input_ids[index : index + 1, :length],
        "attention_mask": windows.attention_mask[index : index + 1, :length],
    }
    tokens = tokens_from_encoding(windows.encoding, [windows.question, windows.context], loaded.tokenizer, row=index)
    for column in ("ids", "strings", "offsets", "special", "segments"):
        setattr(tokens, column, getattr(tokens, column)[:length])
    return Encoded(inputs, tokens, [])
