"""The "Pre-LN vs Post-LN" tab: two models side by side, the outlier experiment, gradients at init, curves."""

from __future__ import annotations

import gradio as gr

from ..handlers import Handlers, user_errors
from ..settings import Settings
from ..teaching import TeachingHandlers
from .widgets import MODEL_EVENTS, MODEL_PROGRESS, caption, captioned, model_picker, plot, top_k_limit

COMPARE_TEXT = "In the beginning God created the heaven and the <mask>."
TEACHING_INTRO = """Pre-LN puts each LayerNorm on the way **into** a sublayer; post-LN (the original Transformer, BERT and
RoBERTa) puts it **after** each residual addition. Here the same text goes through two models, by default the
bundled twins, which were trained on the same data with the same recipe and differ only in that placement."""


OUTLIER_INTRO = """## Outlier dimensions
Trained LayerNorms grow a few dimensions with outsized γ and β (the LayerNorm tab flags them). Do the models rely
on them? Switch them off in every LayerNorm of both models, on the text above, and compare with random
dimensions."""


def teaching_tab(settings: Settings, handlers: Handlers, run: dict) -> tuple[TeachingHandlers, tuple, tuple]:
    """The "Pre-LN vs Post-LN" tab: comparison on real models, the experiment at init, the training curves.

    Returns its handlers and the curve controls and views, which the page's load event fills in."""
    teaching = TeachingHandlers(handlers.registry)
    gr.Markdown(TEACHING_INTRO)
    with gr.Row():
        left = model_picker(settings, handlers, "compare-left", "Left model")
        right = model_picker(settings, handlers, "compare-right", "Right model")
    with gr.Row():
        text = gr.Textbox(label="Text (a <mask> adds both models' predictions)", value=COMPARE_TEXT, scale=4)
        top_k = gr.Slider(1, top_k_limit(10), value=5, step=1, label="Top k", scale=1)
    button = gr.Button("Compare", variant="primary")
    notices = gr.Markdown()
    with gr.Row():
        left_diagram = gr.Plot(label="Left model: one layer")
        right_diagram = gr.Plot(label="Right model: one layer")
    caption("layer_diagram")
    residual = plot("Residual norm per layer", "residual_comparison_figure")
    scales = plot("LayerNorm 1/σ", "layernorm_scale_figure")
    entropy = plot("Attention entropy", "entropy_comparison_figure")
    predictions = captioned(
        gr.Dataframe(label="Predictions", interactive=False, wrap=True, elem_id="compare-predictions"), "fill_mask_rows"
    )
    downloads = gr.File(label="The comparison as CSV and JSON", file_count="multiple", interactive=False)
    button.click(user_errors(teaching.compare), [left, right, text, top_k],
                 [notices, left_diagram, right_diagram, residual, scales, entropy, predictions, downloads],
                 api_name="ui_compare", **run)
    outlier_section(teaching, [left, right, text], run)

    gr.Markdown("## Gradients at initialisation\nFresh, untrained models of both kinds, built here and now.")
    with gr.Row():
        depth = gr.Slider(1, 24, value=12, step=1, label="Layers")
        width = gr.Radio([64, 128, 256], value=128, label="Width")
        init_std = gr.Number(value=teaching.matched_std(128), label="Init std (empty: matched to the width)")
        seed = gr.Number(value=0, label="Seed", precision=0)
    width.change(user_errors(teaching.matched_std), width, init_std, api_visibility="private")
    start = gr.Button("Run the experiment")
    with gr.Row():
        layer_gradients = plot("Gradient per layer", "layer_gradients_figure")
        sweep = plot("Last layer against depth", "depth_sweep_figure")
    residual_init = plot("Residual norm at initialisation", "residual_init_figure")
    init_downloads = gr.File(label="The experiment as CSV and JSON", file_count="multiple", interactive=False)
    start.click(user_errors(teaching.init_experiment), [depth, width, init_std, seed],
                [layer_gradients, sweep, residual_init, init_downloads], api_name="init_experiment",
                concurrency_id=MODEL_EVENTS, show_progress=MODEL_PROGRESS)

    gr.Markdown("## Training curves\nRecorded when the bundled twins were trained (models/README.md).")
    settings_choices, first_setting, layer_choices = teaching.curve_choices()
    with gr.Row():
        setting = gr.Dropdown(settings_choices, value=first_setting, label="Run")
        layer = gr.Dropdown(layer_choices, value=layer_choices[0] if layer_choices else None, label="Gradient of")
    curve_notices = gr.Markdown(elem_id="curve-notices")  # what keeps the curves from being drawn, if anything
    loss = plot("Loss", "loss_curves_figure")
    gradient = plot("Gradient norm", "gradient_curves_figure")
    curve_files = gr.File(label="The two runs' logs (CSV)", file_count="multiple", interactive=False)
    curve_outputs = (curve_notices, loss, gradient, curve_files)
    for control in (setting, layer):
        control.change(user_errors(teaching.training_curves), [setting, layer], list(curve_outputs),
                       api_visibility="private")
    return teaching, (setting, layer), curve_outputs


def outlier_section(teaching: TeachingHandlers, models_and_text: list, run: dict) -> None:
    """The teaching tab's outlier-dimension experiment, on the comparison's two models and text."""
    gr.Markdown(OUTLIER_INTRO)
    with gr.Row():
        controls = gr.Slider(1, 10, value=3, step=1, label="Random controls")
        seed = gr.Number(value=0, label="Seed", precision=0)
    start = gr.Button("Switch off the outlier dimensions")
    notices = gr.Markdown()
    figure = plot("Outlier dimensions switched off", "ablation_figure")
    table = gr.Dataframe(label="Every run, per mask", interactive=False, wrap=True)
    downloads = gr.File(label="The runs as CSV and JSON", file_count="multiple", interactive=False)
    start.click(user_errors(teaching.ablation), [*models_and_text, controls, seed], [notices, figure, table, downloads],
                api_name="ui_ablation", **run)
