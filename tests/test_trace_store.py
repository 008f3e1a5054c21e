"""Traces live in one server-side store under one memory budget; a visitor's session keeps a small record."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rpln_app.handlers import NO_RUN, RECOMPUTED, Handlers
from rpln_app.registry import ModelRegistry
from rpln_app.trace_store import TraceRecord, TraceStore, trace_nbytes
from rpln_core import fill_mask

TEXT = "the cat sat on the <mask> ."


@pytest.fixture(scope="module")
def model_dir(checkpoint_dir):
    return str(checkpoint_dir("pre-ln", "mlm"))


def handlers_with(model_dir: str, budget_bytes: int) -> Handlers:
    return Handlers(ModelRegistry([model_dir], public=False), TraceStore(budget_bytes))


def trace_of(loaded, text: str = TEXT):
    return fill_mask(loaded, text).trace


@dataclass
class Held:
    whole: torch.Tensor
    view: torch.Tensor
    table: np.ndarray


def test_a_trace_is_counted_by_the_storage_its_tensors_keep_alive():
    whole = torch.zeros(10, 8, dtype=torch.float16)  # 160 bytes
    held = Held(whole, whole[2:4], np.zeros(5, dtype=np.float32))  # the view shares the tensor's storage
    assert trace_nbytes(held) == 160 + 20
    assert trace_nbytes([held, {"again": held}]) == 180  # each storage once, wherever it is referenced


def test_the_store_keeps_its_budget_by_evicting_the_least_recently_used(loaded):
    model = loaded("pre-ln", "mlm")
    traces = [trace_of(model, f"the {word} sat on the <mask> .") for word in ("cat", "dog", "man")]
    size = max(trace_nbytes(trace) for trace in traces)
    store = TraceStore(budget_bytes=2 * size + size // 2)  # room for two
    first, second = store.put(traces[0]), store.put(traces[1])
    assert store.get(first) is traces[0]  # now the most recently used: the second goes first
    third = store.put(traces[2])
    assert second not in store and first in store and third in store
    assert store.nbytes == trace_nbytes(traces[0]) + trace_nbytes(traces[2]) <= store.budget_bytes
    assert store.get(second) is None


def test_a_trace_larger_than_the_whole_budget_is_not_kept(loaded):
    trace = trace_of(loaded("pre-ln", "mlm"))
    store = TraceStore(budget_bytes=trace_nbytes(trace) - 1)
    assert store.get(store.put(trace)) is None and store.nbytes == 0


def test_keys_are_unguessable_and_distinct(loaded):
    trace = trace_of(loaded("pre-ln", "mlm"))
    store = TraceStore()
    keys = {store.put(trace) for _ in range(3)}
    assert len(keys) == 3 and all(len(key) == 32 for key in keys)  # uuid4: 122 random bits


def test_a_session_keeps_a_record_of_a_few_hundred_bytes_not_the_trace(model_dir):
    handlers = handlers_with(model_dir, 2**30)
    *_, record = handlers.fill_mask(model_dir, TEXT, 5)
    assert isinstance(record, TraceRecord)
    assert record.inputs == {"text": TEXT, "top_k": 5}
    kept = len(pickle.dumps(dataclasses.replace(record, about=None)))
    trace = handlers.traces.get(record.key)
    # the record: the key, the task, the model's name and the typed text; the trace stays on the server
    assert kept < 600 + len(model_dir) + len(TEXT)
    # and what its downloads will say: the same again, the time, and the result's rows (5 predictions here)
    described = len(pickle.dumps(record))
    assert described - kept < 600 + len(model_dir) + len(TEXT) + len(pickle.dumps(record.about.result))
    assert described * 20 < len(pickle.dumps(trace))


def test_a_slider_after_eviction_runs_the_model_again_and_draws_the_same_figure(model_dir, capsys):
    handlers = handlers_with(model_dir, 2**30)
    *_, record = handlers.fill_mask(model_dir, TEXT, 5)
    before, before_mosaic = handlers.attention_views(record, 1, 2)
    before_ln = handlers.gamma_beta(record, "blocks.1.ln2").plot  # the figure's JSON, as gr.Plot sends it
    other = "a dog ran to the <mask> ."
    newer_size = trace_nbytes(fill_mask(handlers.registry.get(model_dir), other).trace)
    handlers.traces.budget_bytes = handlers.traces.nbytes + newer_size - 1  # no room for both
    handlers.fill_mask(model_dir, other, 5)  # a newer run (another visitor's, say) evicts this one
    assert record.key not in handlers.traces and len(handlers.traces) == 1
    capsys.readouterr()

    after, after_mosaic = handlers.attention_views(record, 1, 2)
    assert RECOMPUTED in capsys.readouterr().out  # gr.Info prints outside a Gradio event
    assert after.plot == before.plot
    assert Path(after_mosaic).read_bytes() == Path(before_mosaic).read_bytes()
    assert handlers.gamma_beta(record, "blocks.1.ln2").plot == before_ln


def test_a_recomputed_trace_is_kept_again_under_the_same_record(model_dir, capsys):
    handlers = handlers_with(model_dir, 2**30)
    *_, record = handlers.fill_mask(model_dir, TEXT, 5)
    handlers.traces = TraceStore(2**30)  # everything evicted
    handlers.attention_views(record, 0, 0)
    assert record.key in handlers.traces
    capsys.readouterr()
    handlers.attention_views(record, 0, 1)
    assert RECOMPUTED not in capsys.readouterr().out


def test_moving_the_sliders_frames_that_head_in_the_model_view(model_dir):
    from viz import attention

    handlers = handlers_with(model_dir, 2**30)
    *_, record = handlers.fill_mask(model_dir, TEXT, 5)
    _, png = handlers.attention_views(record, 1, 2)
    trace = handlers.traces.get(record.key)
    mosaic = Image.open(png).convert("RGB")
    assert mosaic.tobytes() == attention.model_view(trace, selected=(1, 2)).convert("RGB").tobytes()
    assert mosaic.tobytes() != attention.model_view(trace).convert("RGB").tobytes()
    assert "_model-view_the-cat-sat" in Path(png).name and png.endswith("_layer1-head2.png")  # not image.png


def test_re_drawing_with_no_run_says_so_and_changes_nothing(model_dir, capsys):
    import gradio as gr

    handlers = handlers_with(model_dir, 2**30)
    assert handlers.attention_views(None, 0, 0) == (gr.skip(), gr.skip())
    assert NO_RUN in capsys.readouterr().out


def test_the_store_keeps_at_most_max_traces_however_small_they_are(loaded):
    trace = trace_of(loaded("pre-ln", "mlm"))
    store = TraceStore(budget_bytes=2**30, max_traces=2)
    first, second, third = (store.put(trace) for _ in range(3))
    assert len(store) == 2 and first not in store and second in store and third in store


def test_a_tabs_new_run_replaces_its_previous_trace_so_one_visitor_cannot_crowd_out_others(model_dir):
    handlers = handlers_with(model_dir, 2**30)
    *_, someone_else = handlers.fill_mask(model_dir, "a dog ran to the <mask> .", 5)
    record = None
    for word in ("cat", "man", "bird", "fish"):
        *_, record = handlers.fill_mask(model_dir, f"the {word} sat on the <mask> .", 5, record)
    assert len(handlers.traces) == 2 and someone_else.key in handlers.traces and record.key in handlers.traces
