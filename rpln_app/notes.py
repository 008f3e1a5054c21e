"""What a task tab says beside its result, in a visitor's words: the engine's notices rephrased, the QA model that
never abstains, and a run that failed while the previous run's results stay on screen.

Plain text throughout: the handlers escape it for Markdown. The engine's notices are sentences for a Python user
("max_seq_len lowered from 384 to 128"); the tabs have no such settings, so they say what happened to the text.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from rpln_core.errors import RplnError

from .pickers import model_facts

if TYPE_CHECKING:
    from rpln_core.tasks.qa import QAResult

    from .trace_store import TraceRecord

# Engine notices about QA's windows (rpln_core.tasks.qa_spans), which the tab's own sentence about windows replaces:
# the tab sets neither max_seq_len nor doc_stride, and truncate_question stays off.
WINDOW_SETTING_NOTICES = (
    re.compile(r"^max_seq_len lowered from \d+ to \d+"),
    re.compile(r"^doc_stride lowered from \d+ to \d+"),
)
QUOTED_CHARS = 60  # how much of a previous run's text a notice repeats
FAILURES_KEPT = 1000  # failure messages waiting for their tab's notice (each a sentence); the oldest go first


def qa_notices(result: QAResult, model: str, impossible: bool) -> list[str]:
    """The QA tab's notices: the engine's, its window settings said once in words, and the abstention note."""
    notices = [n for n in result.notices if not any(p.match(n) for p in WINDOW_SETTING_NOTICES)]
    if result.windows > 1:
        limit = model_facts(model).max_tokens
        reads = (f"This model reads at most {limit} tokens at once" if limit
                 else "The context is too long to read at once")
        notices.append(
            f"{reads}: the context was read in {result.windows} overlapping windows, and the views show window "
            f"{result.window + 1}, which holds the best answer."
        )
    if impossible and result.answers and result.answers[0].start_token >= 0:
        notices.append(no_answer_note(model, result))
    return notices


def no_answer_note(model: str, result: QAResult) -> str:
    """Why "Allow 'no answer'" changed nothing: the model rated an empty answer below a span of the context."""
    null = next((a for a in result.answers if a.start_token < 0), None)
    rank = (f"it scored 'no answer' {null.score:.2g}, below the answers above it" if null is not None
            else "it scored 'no answer' below every answer shown")
    trained = ""
    if model == "preln-mini-qa":  # models/README.md: trained only on answerable questions (scripts/build_qa.py)
        trained = " preln-mini-qa was trained only on questions whose answer is in the context: it never abstains."
    return f"'No answer' was allowed, but {rank}.{trained} Judge an answer by its score instead."


def previous_run(record: TraceRecord | Any) -> str | None:
    """'model X on "text…"': whose results a tab still shows; None before any run."""
    inputs = getattr(record, "inputs", None)
    if not isinstance(inputs, dict):
        return None
    typed = ("text", "question", "context", "prompt")  # the tabs' main input, whichever task
    text = next((v for k, v in inputs.items() if k in typed and isinstance(v, str)), "")
    text = " ".join(text.split())
    shown = text if len(text) <= QUOTED_CHARS else text[: QUOTED_CHARS - 1] + "…"
    return f"model {record.model} on \u201c{shown}\u201d"


def failed_run_notice(message: str | None, record: TraceRecord | Any) -> list[str]:
    """The notice after a failed run, a paragraph each: why it failed (it was not run), and that what stays on
    screen is the previous run's."""
    paragraphs = [message or "the message at the top right says why."]
    previous = previous_run(record)
    if previous is not None:
        paragraphs.append(f"The results below are still from the previous run ({previous}).")
    return paragraphs


class FailedRuns:
    """The last failure message of each session's tab, kept until the tab's failure event shows it.

    Gradio ends a failed event without its outputs, so the message travels from the failing handler to the
    notice by the session's id. Bounded: a session that never asks for its message costs one sentence."""

    def __init__(self, kept: int = FAILURES_KEPT):
        self.kept = kept
        self._messages: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, session: str | None, task: str, message: str) -> None:
        if not session:
            return  # called in-process (a test, the page's first results): no notice will ask
        with self._lock:
            self._messages[session, task] = message
            self._messages.move_to_end((session, task))
            while len(self._messages) > self.kept:
                self._messages.popitem(last=False)

    @contextlib.contextmanager
    def noting(self, session: str | None, task: str):
        """Note the message of an RplnError raised inside (then raise it on, for the toast and the event's failure)."""
        try:
            yield
        except RplnError as error:
            self.note(session, task, error.message)
            raise

    def take(self, session: str | None, task: str) -> str | None:
        with self._lock:
            return self._messages.pop((session, task), None) if session else None
