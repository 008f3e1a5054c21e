"""Tiny models built in the test session: no downloads, fixed seeds, both LayerNorm placements."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import pytest
import torch

from rpln_core import synthetic
from rpln_core.load import load_model

torch.set_num_threads(min(2, os.cpu_count() or 1))

# A large init spread makes predictions peaked, so rankings compared with pipelines are not near-ties.
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=66, initializer_range=0.2)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Other jobs share this machine's two cores: a module that asks for this takes one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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


LABELS = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}


@dataclass
class AppServer:
    url: str
    models: dict[str, str]  # task -> checkpoint directory the app serves


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_server():
    """The app as shipped, in public mode (as on Spaces): the bundled models, on a free loopback port."""
    import app as app_module
    from rpln_app.settings import DEFAULT_MODELS, Settings
    from rpln_core.catalog import bundled_models

    models = {**DEFAULT_MODELS, "post-ln": "postln-mini"}
    settings = Settings(port=free_port(), public=True, models=bundled_models())
    demo = app_module.build_demo(settings)
    demo.launch(server_name="127.0.0.1", server_port=settings.port, prevent_thread_lock=True, quiet=True)
    try:
        yield AppServer(f"http://127.0.0.1:{settings.port}/", models)
    finally:
        demo.close()
