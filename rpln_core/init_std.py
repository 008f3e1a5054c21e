"""The init standard deviation the experiments at initialisation default to, importable without torch."""

from __future__ import annotations

import math

REFERENCE_WIDTH, REFERENCE_STD = 1024, 0.02  # roberta-large with HF's default init: the measurements


def matched_init_std(width: int) -> float:
    """The init std that gives a `width`-wide model roberta-large's relative init (std * sqrt(width) held fixed).

    A branch's output scale goes with std * sqrt(width), so 0.02 on a narrow model makes every branch
    nearly silent and both architectures behave like the identity; this std restores the effects.
    """
    return REFERENCE_STD * math.sqrt(REFERENCE_WIDTH / width)
