"""The Pre-LN vs Post-LN lesson: five numbered steps, one idea each, every one drawn as the page opens from
results computed once and cached."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go
import pytest

from rpln_app.inside import EXPORT_ROOT
from rpln_app.registry import ModelRegistry
from rpln_app.settings import Settings
from rpln_app.teaching import LESSON, TeachingHandlers
from rpln_core.catalog import bundled_models

TWINS = ("preln-mini", "postln-mini")
# The load event's outputs: a notice, then the comparison (8), step 5 (4), step 3 (4) and step 4 (4).
ARRIVAL_OUTPUTS = 1 + 8 + 4 + 4 + 4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def counted(fn, calls: list):
    def wrapper(*args, **kwargs):
        calls.append(fn.__name__)
        return fn(*args, **kwargs)

    return wrapper


@pytest.fixture(scope="module")
def arrived():
    """The bundled twins' lesson, arrived at once; its handlers count the runs that arrival made."""
    handlers = TeachingHandlers(ModelRegistry(list(TWINS), public=False))
    calls: list[str] = []
    for name in ("compare", "ablation", "init_experiment", "training_curves"):
        setattr(handlers, name, counted(getattr(handlers, name), calls))
    start = handlers.lesson_start(*TWINS)
    return handlers, start, handlers.on_arrival(start), calls


def by_name(values: list) -> dict:
    """The arrival's outputs under the names of the components they fill (the order of `arrival_parts`)."""
    names = ["notice", "compare_notices", "left_diagram", "right_diagram", "residual", "scales", "entropy",
             "predictions", "compare_files", "ablation_notices", "ablation", "ablation_table", "ablation_files",
             "init_gradients", "init_sweep", "init_residual", "init_files", "curve_notices", "loss", "gradient",
             "curve_files"]
    assert len(values) == len(names) == ARRIVAL_OUTPUTS
    return dict(zip(names, values))


# --- the steps ---------------------------------------------------------------------------------------


def test_the_lesson_has_five_numbered_steps_each_with_one_idea_and_what_to_look_for():
    assert [step.number for step in LESSON] == [1, 2, 3, 4, 5]
    assert [step.title for step in LESSON] == [
        "Where the LayerNorm sits", "What happens to the residual stream", "Gradients at initialisation",
        "Training without warm-up", "Outlier dimensions",
    ]
    for step in LESSON:
        assert 40 < len(step.idea) < 300 and 80 < len(step.look_for) < 600, step.title


def inside(block) -> list:
    """Every component nested in `block`, depth first."""
    found = []
    for child in getattr(block, "children", []):
        found += [child, *inside(child)]
    return found


@pytest.fixture(scope="module")
def demo():
    import app

    return app.build_demo(Settings(models=bundled_models(), public=True))


def test_each_step_is_a_headed_panel_with_its_own_charts_and_only_its_own_controls(demo):
    steps = {block.elem_id: block for block in demo.blocks.values()
             if (block.elem_id or "").startswith("lesson-step-")}
    assert sorted(steps) == [f"lesson-step-{step.number}" for step in LESSON]
    for step in LESSON:
        heading, *_ = inside(steps[f"lesson-step-{step.number}"])
        assert isinstance(heading, gr.Markdown)
        assert heading.value.startswith(f"### {step.number}. {step.title}\n") and "What to look for:" in heading.value
    charts = {"lesson-step-1": {"lesson-left-diagram", "lesson-right-diagram"},
              "lesson-step-2": {"lesson-residual", "lesson-scales"},
              "lesson-step-3": {"lesson-init-gradients", "lesson-init-sweep", "lesson-init-residual"},
              "lesson-step-4": {"lesson-loss", "lesson-gradient"},
              "lesson-step-5": {"lesson-ablation"}}
    buttons = {"lesson-step-1": set(), "lesson-step-2": set(), "lesson-step-3": {"Run the experiment"},
               "lesson-step-4": set(), "lesson-step-5": {"Switch off the outlier dimensions"}}
    for elem_id, step in steps.items():
        nested = inside(step)
        # drawn on arrival, so shown: only the details are folded away
        assert not any(isinstance(c, gr.Accordion) and c.open for c in nested), elem_id
        assert {c.elem_id for c in nested if isinstance(c, gr.Plot)} == charts[elem_id]
        assert {c.value for c in nested if isinstance(c, gr.Button)} == buttons[elem_id]
        # the long captions and downloads wait in a closed "details" section inside the step
        assert any(isinstance(c, gr.Accordion) and not c.open for c in nested), elem_id


def test_the_page_load_fills_every_step_without_queueing_behind_model_runs(demo):
    (arrival,) = [dep for dep in demo.config["dependencies"]
                  if any(demo.blocks[i].elem_id == "lesson-notices" for i in dep["outputs"])]
    assert [trigger for _, trigger in arrival["targets"]] == ["load"] and arrival["inputs"] == []
    assert len(arrival["outputs"]) == ARRIVAL_OUTPUTS
    assert arrival["api_visibility"] == "private"
    assert demo.fns[arrival["id"]].concurrency_id != "model"
    ids = {demo.blocks[i].elem_id for i in arrival["outputs"]}
    assert {"lesson-residual", "lesson-ablation", "lesson-init-sweep", "lesson-loss"} <= ids


# --- results on arrival ------------------------------------------------------------------------------


def test_every_steps_result_is_there_on_arrival(arrived):
    _, start, values, _ = arrived
    out = by_name(values)
    assert out["notice"] == "" and out["compare_notices"] == "" and out["ablation_notices"] == ""
    figures = [name for name, value in out.items() if isinstance(value, go.Figure)]
    assert len(figures) == 11 and all(out[name].data for name in figures)
    assert out["left_diagram"].layout.title.text == "preln-mini: one layer"
    assert out["right_diagram"].layout.title.text == "postln-mini: one layer"
    assert f"{start.depth} layers, width {start.width}" in out["init_gradients"].layout.title.text
    assert "no warm-up, lr 2e-3" in out["loss"].layout.title.text and "layer 0" in out["gradient"].layout.title.text
    assert len(out["predictions"]) == start.top_k  # table rows: one per rank of the one mask
    for files in ("compare_files", "ablation_files", "init_files", "curve_files"):
        assert out[files] and all(Path(f).is_file() for f in out[files]), files


def test_step_2_on_arrival_shows_post_lns_flat_stream_on_an_axis_from_zero(arrived):
    residual = by_name(arrived[2])["residual"]
    pre, post = residual.data
    assert "pre-ln" in pre.name and "post-ln" in post.name
    assert max(post.y) / min(post.y) < 1.1 < max(pre.y) / min(pre.y)  # what "What to look for" says
    assert residual.layout.yaxis.type == "linear" and residual.layout.yaxis.rangemode == "tozero"


def test_results_on_arrival_are_computed_once_and_then_served_from_the_cache(arrived):
    handlers, start, first, calls = arrived
    assert sorted(calls) == ["ablation", "compare", "init_experiment", "training_curves"]
    again = handlers.on_arrival(start)
    assert len(calls) == 4  # nothing ran again
    assert all(a is b for a, b in zip(first[1:], again[1:]))


def test_visitors_arriving_together_share_one_computation():
    handlers = TeachingHandlers(ModelRegistry(list(TWINS), public=False))
    calls: list[str] = []
    handlers.compare = counted(handlers.compare, calls)
    start = handlers.lesson_start(*TWINS)
    results = []
    threads = [threading.Thread(target=lambda: results.append(handlers.on_arrival(start))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["compare"] and len(results) == 3
    assert all(result[2] is results[0][2] for result in results)


def test_the_downloads_on_arrival_live_outside_the_pruned_export_folders(arrived):
    # The export root keeps only the newest few requests' folders; files that serve every visitor must not be there.
    out = by_name(arrived[2])
    written = [Path(f) for f in out["compare_files"] + out["ablation_files"] + out["init_files"]]
    assert written and all(EXPORT_ROOT not in path.parents for path in written)


def test_a_step_that_cannot_be_drawn_is_named_left_empty_and_tried_again():
    handlers = TeachingHandlers(ModelRegistry(["postln-mini"], public=True))  # the left twin is not served
    calls: list[str] = []
    handlers.compare = counted(handlers.compare, calls)
    start = handlers.lesson_start(*TWINS)
    out = by_name(handlers.on_arrival(start))
    assert "steps 1 and 2" in out["notice"] and "serves only" in out["notice"]
    assert out["residual"] is None and out["left_diagram"] is None
    # the others still come; step 5 runs the model it can and names the other, as its button would
    assert all(isinstance(out[name], go.Figure) for name in ("ablation", "init_sweep", "loss"))
    assert "preln" in out["ablation_notices"]
    handlers.on_arrival(start)
    assert calls == ["compare", "compare"]  # a failure is not cached
