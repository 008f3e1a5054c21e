"""Checks of numbers a user typed or a slider sent, with messages that say what is allowed."""

from __future__ import annotations

import numbers

import numpy as np

from .errors import RplnError

MAX_SEED = 2**31 - 1  # torch.Generator().manual_seed accepts this on every platform


def whole_number(value, what: str, low: int, high: int) -> int:
    """`value` as an int in [low, high]. Sliders may send 12.0, so whole floats pass; True and 12.5 do not."""
    whole = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and float(value).is_integer()  # False for NaN and infinities too
        and low <= value <= high
    )
    if not whole:
        raise RplnError(f"{what} must be a whole number from {low} to {high}; got {value!r}.")
    return int(value)


def check_flag(value, what: str) -> bool:
    """`value` if it is a real True/False: "False" or 0 from a form would otherwise read as a choice."""
    if not isinstance(value, (bool, np.bool_)):
        raise RplnError(f"{what} must be True or False; got {value!r}.")
    return bool(value)
