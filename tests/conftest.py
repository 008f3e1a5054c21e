"""Tiny models built in the test session: no downloads, fixed seeds, both LayerNorm placements."""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass

import pytest
import torch

from rpln_core import synthetic
from rpln_core.load import load_model

torch.set_num_threads(min(2, os.cpu_count() or 1))
# The bundled deltas (rpln_core.deltas) are built into checkpoints on first load: into this session's own folder
# (app servers the tests start inherit it), not the user's cache.
os.environ.setdefault("RPLN_DELTA_CACHE", tempfile.mkdtemp(prefix="rpln-test-deltas-"))

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
    yield from serve(app_module, Settings(port=free_port(), public=True, models=bundled_models()), models)


def serve(app_module, settings, models: dict[str, str], warmed: bool = False):
    """Serve the app built for `settings` on its loopback port until the fixture that yields from this ends.

    `warmed`: first wait for the tabs' first results (app.py computes them in its "first-results" thread), so that
    no test loads a model beside that thread. Either way the thread has ended before the server closes, so no later
    test meets it and the process never exits with it still inside torch (an abort)."""
    demo = app_module.build_demo(settings)
    demo.launch(server_name="127.0.0.1", server_port=settings.port, prevent_thread_lock=True, quiet=True)
    if warmed:
        app_module.wait_for_first_results(timeout=300)
    try:
        yield AppServer(f"http://127.0.0.1:{settings.port}/", models)
    finally:
        # A thread still computing first results would write into the export folder a later test watches.
        app_module.wait_for_first_results(timeout=300)
        demo.close()


# Labels of the tiny token classifier: BIO tags, so the aggregation strategies have runs to group.
BIO_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="session")
def head_checkpoints(checkpoint_dir):
    """Tiny random checkpoints of the token-classification, multiple-choice and causal-LM heads: task -> directory."""
    bio = {"id2label": dict(enumerate(BIO_LABELS)), "label2id": {label: i for i, label in enumerate(BIO_LABELS)}}
    return {
        "token-classification": str(checkpoint_dir("pre-ln", "token-classification", **bio)),
        "multiple-choice": str(checkpoint_dir("pre-ln", "multiple-choice")),
        "causal-lm": str(checkpoint_dir("pre-ln", "causal-lm")),
    }


@pytest.fixture(scope="session")
def head_app_server(head_checkpoints):
    """The app in public mode with the bundled models and the tiny head checkpoints, which the head tabs start with."""
    import app as app_module
    from rpln_app.settings import DEFAULT_MODELS, Settings
    from rpln_core.catalog import bundled_models

    models = {**DEFAULT_MODELS, **head_checkpoints}
    settings = Settings(port=free_port(), public=True, models=bundled_models() + list(head_checkpoints.values()),
                        defaults=models)
    yield from serve(app_module, settings, models, warmed=True)
