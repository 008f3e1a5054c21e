"""Traces kept on the server for re-drawing, under one memory budget for all visitors together.

A tab's run leaves a trace that its sliders and pickers re-draw from. Kept in each visitor's gr.State, traces
grew memory with every visitor (Gradio keeps a closed tab's state for an hour). Here they live in one
least-recently-used store: the session keeps only a `TraceRecord` (the key and the inputs of the run), and a
re-drawing event whose trace was evicted runs the task again from those inputs.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rpln_core.capture import Trace

DEFAULT_BUDGET_BYTES = 256 * 2**20  # about four traces of a 12-layer, 768-wide model at 450 tokens


@dataclass(frozen=True)
class TraceRecord:
    """What a visitor's session keeps of a run: a few hundred bytes plus the text(s) they typed."""

    key: str  # the trace's key in the store
    task: str  # "fill-mask", "classification" or "qa"
    model: str
    inputs: dict[str, Any]  # keyword arguments of the engine call: running it again gives the same trace
    # What the run's downloads describe (an rpln_app.inside.RunAbout: inputs, result, time), written when the Export
    # tab is opened. A few rows of result, not the trace.
    about: Any = field(default=None, compare=False)


class TraceStore:
    """Traces by key, least recently used evicted first once their tensors exceed `budget_bytes` together or
    there are more than `max_traces` of them.

    The count matters for small models: a bundled model's 120 KB trace costs 200-350 KB of the server's memory
    (Python objects and allocator slack of ~90 small tensors), which its tensor bytes do not show; and traces
    of sessions Gradio has let go can never be drawn again. A trace larger than the whole budget is not kept:
    its re-drawing events run the task again.
    """

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES, max_traces: int | None = None):
        self.budget_bytes = budget_bytes
        self.max_traces = max_traces
        self._traces: OrderedDict[str, tuple[Trace, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # sliders of many sessions read while runs write

    def put(self, trace: Trace, key: str | None = None) -> str:
        """Keep `trace` (under `key`, or a new unguessable one) and return its key."""
        key = key or uuid.uuid4().hex  # random: records stay on the server, but no key should be guessable
        size = trace_nbytes(trace)
        with self._lock:
            self._drop(key)
            if size <= self.budget_bytes:
                self._traces[key] = (trace, size)
                self._bytes += size
                while self._over_budget():
                    self._drop(next(iter(self._traces)))
        return key

    def discard(self, key: str) -> None:
        """Forget the trace under `key` (a session's earlier run, replaced by its new one)."""
        with self._lock:
            self._drop(key)

    def get(self, key: str) -> Trace | None:
        """The trace kept under `key`, now the most recently used; None if it was evicted (or never kept)."""
        with self._lock:
            if key not in self._traces:
                return None
            self._traces.move_to_end(key)
            return self._traces[key][0]

    @property
    def nbytes(self) -> int:
        """Bytes of tensors held now; at most `budget_bytes`."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._traces)

    def __contains__(self, key: str) -> bool:
        return key in self._traces

    def _over_budget(self) -> bool:
        too_many = self.max_traces is not None and len(self._traces) > self.max_traces
        return too_many or self._bytes > self.budget_bytes

    def _drop(self, key: str) -> None:
        entry = self._traces.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]


def trace_nbytes(trace: Any) -> int:
    """Bytes of the tensors and arrays a trace holds, each storage counted once (views share theirs)."""
    seen: set[int] = set()
    total = 0
    for array in _arrays(trace):
        if hasattr(array, "untyped_storage"):  # a torch tensor: what it keeps alive is its whole storage
            storage = array.untyped_storage()
            pointer, size = storage.data_ptr(), storage.nbytes()
        else:  # a numpy array
            base = array.base if array.base is not None else array
            pointer, size = id(base), base.nbytes
        if pointer not in seen:
            seen.add(pointer)
            total += size
    return total


def _arrays(value: Any):
    if hasattr(value, "untyped_storage") or hasattr(value, "__array_interface__"):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from _arrays(getattr(value, item.name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _arrays(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _arrays(item)
