"""What each task tab shows before any click: its default example, run once and kept for every visitor.

The first page load (or the warm-up thread `python app.py` starts) runs each tab's handler on the example the page
opens with; later page loads get the same outputs at once. Every visitor's session gets the run's TraceRecord, so
the sliders and pickers re-draw from the one shared trace, which stays in the trace store (put back on each
load, so a busy store evicts it no sooner than any recent trace; if it was, a re-draw runs the example again).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from rpln_core.errors import RplnError

from .handlers import Handlers, gr_escape
from .pickers import choice_label, model_facts
from .trace_store import TraceRecord

log = logging.getLogger("rpln_app")

# The first results' downloads live apart from rpln_app.inside's export folders, which keep only the newest few
# requests' files: a later visitor's page must still find these.
KEPT_ROOT = Path(tempfile.gettempdir()) / "rpln-first-results"


class Arrivals:
    """The first results of each task tab, computed once (under a lock per tab) and served to every page load."""

    def __init__(self, handlers: Handlers):
        self.handlers = handlers
        self._runs: dict[str, Callable[[], list]] = {}
        self._counts: dict[str, int] = {}  # outputs per tab
        self._models: dict[str, str | None] = {}
        self._kept: dict[str, tuple[list, Any]] = {}  # task -> (outputs, trace)
        self._locks: dict[str, threading.Lock] = {}

    def add(self, task: str, run: Callable[[], list], count: int, model: str | None = None) -> Callable[[], list]:
        """Register `run` (the tab's handler on its example with `model`: `count` outputs, the TraceRecord last);
        returns the page-load handler that serves them."""
        self._runs[task] = run
        self._models[task] = model
        self._counts[task] = count
        self._locks[task] = threading.Lock()
        return lambda: self.outputs(task)

    def outputs(self, task: str) -> list:
        """The tab's first results; computed on the first call. A failure is said in the notices (first output)
        and not kept, so the next page load tries again (a model that failed to load is remembered for a minute
        by the registry)."""
        with self._locks[task]:
            if task not in self._kept:
                facts = model_facts(self._models[task]) if self._models[task] else None
                if facts is not None and not facts.on_disk:  # no download of gigabytes that nobody asked for
                    return self._failed(task, f"{choice_label(facts)} is not downloaded yet.", "to download and run it")
                try:
                    outputs = self._runs[task]()
                except RplnError as error:
                    return self._failed(task, error.message)
                except Exception:  # noqa: BLE001 - the page must open whatever went wrong
                    log.exception("the %s tab's first results failed", task)
                    return self._failed(task, "something went wrong while running the model.")
                record = outputs[-1]
                trace = self.handlers.traces.get(record.key)
                self.handlers.shared_keys.add(record.key)
                self._kept[task] = ([_kept_files(value, KEPT_ROOT / task) for value in outputs], trace)
            outputs, trace = self._kept[task]
        record: TraceRecord = outputs[-1]
        if trace is not None:
            self.handlers.traces.put(trace, record.key)  # most recently used again: this visitor may draw from it
        return list(outputs)

    def warm(self) -> None:
        """Compute every tab's first results now (`python app.py` runs this in a thread as it starts serving)."""
        for task in self._runs:
            self.outputs(task)

    def _failed(self, task: str, message: str, then: str = "to try again") -> list:
        notice = f"The example was not run: {message} Press the button {then}."
        return [gr_escape(notice)] + [gr.skip()] * (self._counts[task] - 1)


def _kept_files(value: Any, folder: Path) -> Any:
    """`value` with any temporary files it names (a download list) copied to `folder`, where no pruning reaches."""
    paths = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if not paths or not all(isinstance(p, str) and _is_temporary_file(p) for p in paths):
        return value
    folder.mkdir(parents=True, exist_ok=True)
    kept = [str(shutil.copy2(path, folder / Path(path).name)) for path in paths]
    return kept[0] if isinstance(value, str) else kept


def _is_temporary_file(text: str) -> bool:
    if len(text) > 4096 or "\n" in text:
        return False
    path = Path(text)
    return path.is_absolute() and path.is_file() and Path(tempfile.gettempdir()) in path.parents
