"""Tiny models built in the test session: no downloads, fixed seeds, both LayerNorm placements."""

from __future__ import annotations

import os

import pytest
import torch

from rpln_core import synthetic
from rpln_core.load import load_model

torch.set_num_threads(min(2, os.cpu_count() or 1))

# A large init spread makes predictions peaked, so rankings compared with pipelines are not near-ties.
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=66, initializer_range=0.2)


@pytest.fixture(scope="session")
def tokenizer():
    return synthetic.build_tokenizer()


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory, tokenizer):
    """Return a function (architecture, task, **config) -> a saved checkpoint directory, cached per session."""
    made = {}

    def make(architecture="pre-ln", task="mlm", seed=0, **config):
        key = (architecture, task, seed, repr(sorted(config.items())))
        if key not in made:
            settings = {**TINY, **config}
            model = synthetic.build_model(
                architecture, task, synthetic.build_config(architecture, len(tokenizer), **settings), seed=seed
            )
            directory = tmp_path_factory.mktemp(f"{architecture}-{task}")
            made[key] = synthetic.save_checkpoint(model, tokenizer, directory)
        return made[key]

    return make


@pytest.fixture(scope="session")
def loaded(checkpoint_dir):
    """Return a function (architecture, task, **config) -> LoadedModel read back from disk by our loader."""
    cache = {}

    def get(architecture="pre-ln", task="mlm", **config):
        key = (architecture, task, repr(sorted(config.items())))
        if key not in cache:
            cache[key] = load_model(str(checkpoint_dir(architecture, task, **config)))
        return cache[key]

    return get
