"""Which models the app may load, and the few it keeps loaded."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from rpln_core.errors import RplnError

if TYPE_CHECKING:
    from rpln_core.load import LoadedModel


class ModelRegistry:
    """Loads checkpoints on demand, keeps the most recent few, and enforces public mode's allow-list."""

    def __init__(self, allowed: list[str], public: bool, cache_size: int = 3):
        self.allowed = list(allowed)
        self.public = public
        self.cache_size = max(1, cache_size)
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedModel:
        """The loaded model `name`; raises RplnError with a user-facing message if it cannot be had."""
        name = (name or "").strip()
        if self.public and name not in self.allowed:
            raise RplnError(f"This public app serves only these models: {', '.join(self.allowed)}.")
        with self._lock:  # two users asking for one new model should load it once
            if name in self._cache:
                self._cache.move_to_end(name)
                return self._cache[name]
            from rpln_core.load import load_model  # torch and transformers load with the first model

            model = load_model(name)
            self._cache[name] = model
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return model


def limit_threads(requested: int = 0) -> int:
    """Use at most one torch thread per core: oversubscription made 1 s requests take a minute here."""
    import torch

    cores = os.cpu_count() or 1
    threads = cores if requested <= 0 else min(requested, cores)
    torch.set_num_threads(threads)
    return threads
