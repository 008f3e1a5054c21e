"""Which models the app may load, and the few it keeps loaded."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from rpln_core.errors import RplnError

from . import inputs as check
from .pickers import LOADED_TASKS, model_facts, refuse_other_head

if TYPE_CHECKING:
    from rpln_core.load import LoadedModel

# A checkpoint that failed to load (corrupt weights, a missing directory, the Hub unreachable) is not tried
# again for this long: each retry re-read gigabytes for every visitor's click. Short, so a fixed file or a
# network back up is picked up without a restart.
FAILURE_MEMORY_S = 60.0


def _load_model(name: str) -> LoadedModel:
    from rpln_core.load import load_model  # torch and transformers load with the first model

    return load_model(name)


def model_bytes(loaded: LoadedModel) -> int:
    """Bytes of a loaded model's weights and buffers (tied weights counted once)."""
    tensors = [*loaded.model.parameters(), *loaded.model.buffers()]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


class ModelRegistry:
    """Loads checkpoints on demand, keeps the most recently used within a memory budget, and enforces public
    mode's allow-list.

    The budget counts weights, not models: the app's seven bundled models (about 20 MB each) all stay loaded, so
    moving between tabs reloads none, while two 355M-parameter checkpoints (1.4 GB each, the Pre-LN vs Post-LN
    tab's pair) fit the default and a third pushes out the oldest. The newest model always stays, whatever its
    size."""

    def __init__(
        self,
        allowed: list[str],
        public: bool,
        memory_mb: int = 3072,
        loader: Callable[[str], LoadedModel] = _load_model,
        failure_memory_s: float = FAILURE_MEMORY_S,
        clock: Callable[[], float] = time.monotonic,
        size_of: Callable[[LoadedModel], int] = model_bytes,
    ):
        self.allowed = list(allowed)
        self.public = public
        self.memory_bytes = memory_mb * 2**20
        self.size_of = size_of
        self.loader = loader
        self.failure_memory_s = failure_memory_s
        self.clock = clock
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._failures: dict[str, tuple[str, float]] = {}  # name -> (message, until when it stands)
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedModel:
        """The loaded model `name`; raises RplnError with a user-facing message if it cannot be had."""
        name = check.model(name)
        if self.public and name not in self.allowed:
            raise RplnError(f"This public app serves only these models: {', '.join(self.allowed)}.")
        with self._lock:  # two users asking for one new model should load it once
            if name in self._cache:
                self._cache.move_to_end(name)
                return self._cache[name]
            failure = self._failures.get(name)
            if failure is not None and self.clock() < failure[1]:
                raise RplnError(failure[0])
            try:
                model = self.loader(name)
            except RplnError as error:
                now = self.clock()
                # forget the expired ones, so that a stream of made-up names cannot grow this
                self._failures = {key: kept for key, kept in self._failures.items() if now < kept[1]}
                self._failures[name] = (error.message, now + self.failure_memory_s)
                raise
            self._failures.pop(name, None)
            self._cache[name] = model
            self._sizes[name] = self.size_of(model)
            while len(self._cache) > 1 and sum(self._sizes.values()) > self.memory_bytes:
                oldest, _ = self._cache.popitem(last=False)
                del self._sizes[oldest]
            return model

    @property
    def loaded(self) -> list[str]:
        """The names of the models kept loaded, least recently used first."""
        return list(self._cache)

    def head(self, name: str) -> str | None:
        """Which task tab `name` belongs to, read from its config.json without loading it; None when unknown.

        Public mode answers only for the allow-list: a typed path's config is nobody's business there."""
        name = check.model(name)
        if self.public and name not in self.allowed:
            return None
        return model_facts(name).head

    def for_task(self, name: str, task: str, api: bool = False) -> LoadedModel:
        """The loaded model `name` if it has `task`'s head, else a message naming the tab (or endpoint) it fits.

        The cheap check comes first, so a wrong pick reads no weights; a model whose head showed only once
        loaded (a Hub id not downloaded before) is checked again."""
        refuse_other_head(name, self.head(name), task, api)
        model = self.get(name)
        refuse_other_head(name, LOADED_TASKS.get(model.task, model.task), task, api)
        return model


def limit_threads(requested: int = 0) -> int:
    """Use at most one torch thread per core: oversubscription made 1 s requests take a minute here."""
    import torch

    cores = os.cpu_count() or 1
    threads = cores if requested <= 0 else min(requested, cores)
    torch.set_num_threads(threads)
    return threads
