"""What a visitor sent, checked before any model is loaded or run.

A browser sends what its widgets hold, but an API client or a hand-made request may send anything: a list as
the model, a number as the text. Each gets a message naming the field (an RplnError), never a traceback.
Numbers are checked with rpln_core.checks / rpln_core.budgets, as the engine checks them.
"""

from __future__ import annotations

from rpln_core.errors import RplnError

# Longer than any Hub id or checkpoint path: a name past it is not a model, and would be held in memory.
MAX_MODEL_NAME = 4096


def model(value, what: str = "model") -> str:
    """A model's name: a bundled name, a Hub id or a checkpoint directory."""
    if not isinstance(value, str):
        raise RplnError(f"{what} must be a name (text), not {type(value).__name__}.")
    value = value.strip()
    if not value or len(value) > MAX_MODEL_NAME:
        raise RplnError(f"{what} must be a name: pick one of the listed models.")
    return value


def text(value, what: str) -> str:
    """`value` if it is text; emptiness and length are the engine's to judge, with the same field name."""
    if not isinstance(value, str):
        raise RplnError(f"The {what} must be text, got {type(value).__name__}.")
    return value


def optional_text(value, what: str) -> str | None:
    """Text, or None for an absent or blank one (an empty box means "none" in this app)."""
    value = "" if value is None else text(value, what)
    return value if value.strip() else None

