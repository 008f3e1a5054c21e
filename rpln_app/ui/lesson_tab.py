"""The "Pre-LN vs Post-LN" tab: a short lesson in numbered steps, each drawn when the page opens.

Each step is a panel under a numbered heading, holding one idea, what to look for, its charts and only its own
controls; the long captions and the downloads wait in a closed "details" accordion, so the page reads step by step.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import gradio as gr

from ..handlers import Handlers, user_errors
from ..settings import Settings
from ..teaching import LESSON, LessonStart, LessonStep, TeachingHandlers
from .widgets import MODEL_EVENTS, MODEL_PROGRESS, caption, model_picker, top_k_limit

TEACHING_INTRO = """A short lesson in five steps, on real models. **Pre-LN** puts each LayerNorm on the way **into** a
sublayer; **post-LN** (the original Transformer, BERT and RoBERTa) puts it **after** each residual addition. Steps 1,
2 and 5 run the two models below on the text below: by default the bundled twins, trained on the same data with the
same recipe, which differ only in that placement. Every step is drawn already; change its settings to run it again."""
DETAILS = "How to read these charts, and their numbers"


@dataclass
class Arrival:
    """What the page's load event needs to draw every step: app.py wires it to `demo.load`."""

    fn: Callable[[], list[Any]]
    outputs: list[Any]
    options: dict[str, Any]


@contextmanager
def lesson_step(step: LessonStep) -> Iterator[None]:
    """A panel headed with the step's number and title, then its idea and what to look for."""
    # A panel, not an accordion: every step is drawn on arrival and meant to be read, and a heading reads as one
    # (an accordion's label is small print).
    with gr.Column(variant="panel", elem_id=f"lesson-step-{step.number}", elem_classes=["lesson-step"]):
        gr.Markdown(f"### {step.number}. {step.title}\n{step.idea}\n\n**What to look for:** {step.look_for}")
        yield


@contextmanager
def details(label: str = DETAILS) -> Iterator[None]:
    with gr.Accordion(label, open=False):
        yield


def teaching_tab(settings: Settings, handlers: Handlers, run: dict) -> tuple[TeachingHandlers, Arrival]:
    """The lesson: where the LayerNorm sits, the residual stream, gradients at init, training without warm-up,
    outlier dimensions; then everything else the comparison measured. Returns its handlers and its arrival."""
    teaching = TeachingHandlers(handlers.registry)
    start = teaching.lesson_start(settings.defaults["compare-left"], settings.defaults["compare-right"])
    gr.Markdown(TEACHING_INTRO)
    arrival_notices = gr.Markdown(elem_id="lesson-notices")  # a step that could not be drawn on arrival, if any
    with gr.Row(equal_height=True):
        left = model_picker(settings, handlers, "compare-left", "Left model")
        right = model_picker(settings, handlers, "compare-right", "Right model")
        text = gr.Textbox(label="Text (a <mask> adds both models' predictions)", value=start.text, scale=2)
        button = gr.Button("Compare", variant="primary", scale=0, min_width=120)
    notices = gr.Markdown()

    with lesson_step(LESSON[0]):
        with gr.Row():
            left_diagram = gr.Plot(label="Left model: one layer", elem_id="lesson-left-diagram")
            right_diagram = gr.Plot(label="Right model: one layer", elem_id="lesson-right-diagram")
        with details("How these diagrams were drawn"):
            caption("layer_diagram")

    with lesson_step(LESSON[1]):
        with gr.Row():
            residual = gr.Plot(label="Residual norm per layer", elem_id="lesson-residual")
            scales = gr.Plot(label="LayerNorm 1/σ", elem_id="lesson-scales")
        with details():
            caption("residual_comparison_figure")
            caption("layernorm_scale_figure")

    with lesson_step(LESSON[2]):
        init_outputs = init_section(teaching, start)

    with lesson_step(LESSON[3]):
        curve_outputs = curve_section(teaching, start)

    with lesson_step(LESSON[4]):
        ablation_inputs, ablation_outputs = outlier_section(teaching, [left, right, text], start, run)

    with gr.Accordion("More from the comparison: predictions, attention entropy and downloads", open=False):
        top_k = gr.Slider(1, top_k_limit(10), value=start.top_k, step=1, label="Top k (for the next Compare)")
        predictions = gr.Dataframe(label="Predictions", interactive=False, wrap=True, elem_id="compare-predictions")
        caption("fill_mask_rows")
        entropy = gr.Plot(label="Attention entropy", elem_id="lesson-entropy")
        caption("entropy_comparison_figure")
        downloads = gr.File(label="The comparison as CSV and JSON", file_count="multiple", interactive=False)

    compare_outputs = [notices, left_diagram, right_diagram, residual, scales, entropy, predictions, downloads]
    # Step 5 runs on the same models and text, so a new comparison brings it along rather than leave it stale.
    button.click(user_errors(teaching.compare), [left, right, text, top_k], compare_outputs,
                 api_name="ui_compare", **run).success(
        user_errors(teaching.ablation), ablation_inputs, ablation_outputs, **{**run, "api_visibility": "private"})

    def arrive() -> list[Any]:
        return teaching.on_arrival(start)

    # Its own queue, not the model one: once cached, a page load must not wait behind other visitors' runs.
    options = dict(api_visibility="private", concurrency_id="lesson-arrival", concurrency_limit=None,
                   show_progress=MODEL_PROGRESS)
    outputs = [arrival_notices, *compare_outputs, *ablation_outputs, *init_outputs, *curve_outputs]
    return teaching, Arrival(arrive, outputs, options)


def init_section(teaching: TeachingHandlers, start: LessonStart) -> list:
    """Step 3's controls and charts: fresh models of a depth and width the user picks."""
    with gr.Row(equal_height=True):
        depth = gr.Slider(1, 24, value=start.depth, step=1, label="Layers")
        width = gr.Radio([64, 128, 256], value=start.width, label="Width")
        init_std = gr.Number(value=start.init_std, label="Init std (empty: matched to the width)")
        seed = gr.Number(value=start.init_seed, label="Seed", precision=0)
        button = gr.Button("Run the experiment", scale=0, min_width=160)
    width.change(user_errors(teaching.matched_std), width, init_std, api_visibility="private")
    with gr.Row():
        layer_gradients = gr.Plot(label="Gradient per layer", elem_id="lesson-init-gradients")
        sweep = gr.Plot(label="Last layer against depth", elem_id="lesson-init-sweep")
    with details("The residual stream at initialisation, how to read these charts, and their numbers"):
        residual_init = gr.Plot(label="Residual norm at initialisation", elem_id="lesson-init-residual")
        for name in ("layer_gradients_figure", "depth_sweep_figure", "residual_init_figure"):
            caption(name)
        files = gr.File(label="The experiment as CSV and JSON", file_count="multiple", interactive=False)
    inputs, outputs = [depth, width, init_std, seed], [layer_gradients, sweep, residual_init, files]
    button.click(user_errors(teaching.init_experiment), inputs, outputs, api_name="init_experiment",
                 concurrency_id=MODEL_EVENTS, show_progress=MODEL_PROGRESS)
    return outputs


def curve_section(teaching: TeachingHandlers, start: LessonStart) -> list:
    """Step 4's controls and charts: the recorded training logs of the twins."""
    choices, _, layers = teaching.curve_choices()
    with gr.Row():
        setting = gr.Dropdown(choices, value=start.curve_setting, label="Run")
        layer = gr.Dropdown(layers, value=start.curve_layer if start.curve_layer in layers else None,
                            label="Gradient of")
    notices = gr.Markdown(elem_id="curve-notices")  # what keeps the curves from being drawn, if anything
    with gr.Row():
        loss = gr.Plot(label="Loss", elem_id="lesson-loss")
        gradient = gr.Plot(label="Gradient norm", elem_id="lesson-gradient")
    with details():
        caption("loss_curves_figure")
        caption("gradient_curves_figure")
        files = gr.File(label="The two runs' logs (CSV)", file_count="multiple", interactive=False)
    outputs = [notices, loss, gradient, files]
    for control in (setting, layer):
        control.change(user_errors(teaching.training_curves), [setting, layer], outputs, api_visibility="private")
    return outputs


def outlier_section(teaching: TeachingHandlers, models_and_text: list, start: LessonStart,
                    run: dict) -> tuple[list, list]:
    """Step 5's controls and chart, on the comparison's two models and text."""
    with gr.Row(equal_height=True):
        controls = gr.Slider(1, 10, value=start.controls, step=1, label="Random controls")
        seed = gr.Number(value=start.ablation_seed, label="Seed", precision=0)
        button = gr.Button("Switch off the outlier dimensions", scale=0, min_width=240)
    notices = gr.Markdown()
    figure = gr.Plot(label="Outlier dimensions switched off", elem_id="lesson-ablation")
    with details():
        caption("ablation_figure")
        table = gr.Dataframe(label="Every run, per mask", interactive=False, wrap=True)
        files = gr.File(label="The runs as CSV and JSON", file_count="multiple", interactive=False)
    inputs, outputs = [*models_and_text, controls, seed], [notices, figure, table, files]
    button.click(user_errors(teaching.ablation), inputs, outputs, api_name="ui_ablation", **run)
    return inputs, outputs
