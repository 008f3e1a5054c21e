"""How much one request may ask of the engine, so that no single call can take minutes or gigabytes.

A public app serves strangers: a 500,000-character context or `top_k=10**9` must get a clear refusal, not hold
the only model slot for a minute. Notebook users who want more raise the limits with `configure`; the app reads
them from its settings (RPLN_MAX_* environment variables, see the README).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .checks import whole_number
from .errors import RplnError


@dataclass(frozen=True)
class Budgets:
    # Any one text a task reads (fill-mask text, classification texts, a question): about 5,000 tokens, ten times
    # what any RoBERTa reads, so nothing a model could use is refused; tokenising it takes milliseconds.
    max_text_chars: int = 20_000
    # A QA context is read in windows, so it may be longer than one model input, but not without end: every
    # window is a model pass. 50,000 characters is about 25 pages.
    max_context_chars: int = 50_000
    max_windows: int = 128  # windows one QA context may need (each one pass of max_seq_len tokens)
    window_batch: int = 8  # QA windows per batched pass: memory stays that of 8 windows for any context
    max_top_k: int = 100  # predictions per mask, answers per question, lens candidates: more is a table nobody reads
    max_masks: int = 10  # masks in one fill-mask text: each adds a full prediction table
    # Tokens one generation may add: each is a model pass (with a cache of what came before), and the final sequence
    # gets one more, traced. 64 is a paragraph; a tiny or bundled model rarely stays coherent that long anyway.
    max_new_tokens: int = 64
    # Choices one multiple-choice question may have: each is a traced pass, so memory grows with them (the traces of
    # all of them are kept for the inside views). 8 covers SWAG (4) and RACE (4) with room.
    max_choices: int = 8


_current = Budgets()


def current() -> Budgets:
    """The limits in force."""
    return _current


def configure(**changes: int) -> Budgets:
    """Replace some limits (e.g. `configure(max_context_chars=200_000)`) and return the limits now in force."""
    global _current
    names = {f.name for f in dataclasses.fields(Budgets)}
    for name, value in changes.items():
        if name not in names:
            raise RplnError(f"There is no budget called {name!r}; the budgets are {', '.join(sorted(names))}.")
        whole_number(value, name, 1, 2**31 - 1)
    _current = dataclasses.replace(_current, **{name: int(value) for name, value in changes.items()})
    return _current


def check_length(text: str, what: str, limit: int | None = None) -> str:
    """`text` if it has at most `limit` characters (default: max_text_chars), else a refusal naming the field."""
    limit = current().max_text_chars if limit is None else limit
    if isinstance(text, str) and len(text) > limit:
        raise RplnError(
            f"The {what} is {len(text):,} characters long; this app reads at most {limit:,}. Shorten it."
        )
    return text


def check_top_k(value, what: str = "top_k", vocabulary: int | None = None) -> int:
    """`value` as a whole number from 1 to max_top_k (and at most the vocabulary), else a refusal naming the field."""
    high = current().max_top_k if vocabulary is None else min(current().max_top_k, vocabulary)
    return whole_number(value, what, 1, high)
