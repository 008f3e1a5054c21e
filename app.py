"""PreLN Explorer: the Gradio app. Layout and wiring only; the work happens in rpln_core, viz and rpln_app.

Run `python app.py` (flags: --host, --port, --models, --public/--no-public, --threads).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from dataclasses import dataclass, field

import gradio as gr

from rpln_app.handlers import Handlers, api_endpoint, import_engine, user_errors
from rpln_app.keys import INSIDE_KEYS
from rpln_app.registry import ModelRegistry, limit_threads
from rpln_app.settings import Settings, exposure_warning, from_environment
from rpln_app.teaching import TeachingHandlers
from rpln_app.trace_store import TraceStore
from rpln_core import budgets
from viz.captions import CAPTIONS

INTRO = """# PreLN Explorer
Type a sentence and see what a **pre-layer-norm RoBERTa** predicts, and what happened inside it on the way:
attention, every LayerNorm's statistics, the residual stream and the logit lens, all from the same forward pass."""

EXAMPLES = {
    "fill-mask": [
        ["The president spoke to the <mask> about the economy."],
        ["In the beginning God created the <mask> and the earth."],
        ["This movie was <mask>, and I would watch it <mask>."],
    ],
    "classification": [
        ["A gripping, beautifully acted and deeply moving film.", ""],
        ["A dull, lifeless mess that wastes its cast.", ""],
    ],
    "qa": [
        [
            "What is a violin?",
            "harp: a chordal stringed instrument. violin: bowed stringed instrument that is the highest member "
            "of the violin family. drum: a musical percussion instrument.",
        ],
    ],
}

MODEL_EVENTS = "model"  # one concurrency group: parallel users queue for the model instead of exhausting memory
# While a model runs, "full" progress animates a pulsing overlay on every output. A browser drawing that in
# software on the server's cores (`python app.py` on a laptop, our 2-core machines) slowed the large model's
# handler from 1.1 s to 1.6 s; "minimal" keeps the running timer on each output and costs nothing measurable.
MODEL_PROGRESS = "minimal"


def caption(name: str) -> gr.Markdown:
    return gr.Markdown(CAPTIONS[name], elem_classes=["caption"])


@dataclass
class InsidePanel:
    """The components of the inside-the-model views of one tab."""

    layer: gr.Slider
    head: gr.Slider
    components: dict[str, gr.components.Component] = field(default_factory=dict)

    @property
    def outputs(self) -> list:
        return [self.layer, self.head] + [self.components[key] for key in INSIDE_KEYS]

    def wire(self, handlers: Handlers, record: gr.State) -> None:
        """Events that re-draw from the run's stored trace (running the model again only if it was evicted).

        Not in the model's concurrency group: a slider should not wait behind other visitors' runs, and the
        engine's lock keeps a rare re-run correct alongside them."""
        c = self.components
        for slider in (self.layer, self.head):
            slider.change(user_errors(handlers.attention_views), [record, self.layer, self.head],
                          [c["head_view"], c["model_view"]], api_visibility="private")
        c["model_view"].select(user_errors(handlers.model_view_click), [record], [self.layer, self.head],
                               api_visibility="private")
        c["ln_choice"].change(user_errors(handlers.gamma_beta), [record, c["ln_choice"]], c["gamma_beta"],
                              api_visibility="private")


def captioned(component, name: str):
    """`component` with the plain-language caption of the figure function `name` under it."""
    caption(name)
    return component


def plot(label: str, name: str) -> gr.Plot:
    with gr.Column():
        return captioned(gr.Plot(label=label), name)


def inside_panel() -> InsidePanel:
    """Lay out the views of what happened inside the model; values come from rpln_app.inside."""
    with gr.Tabs():
        with gr.Tab("Attention"):
            with gr.Row():
                layer = gr.Slider(0, 1, value=0, step=1, label="Layer")
                head = gr.Slider(0, 1, value=0, step=1, label="Head")
            with gr.Row():
                head_view = plot("Head view", "head_view")
                with gr.Column():
                    model_view = captioned(
                        gr.Image(label="Model view: click a head", type="pil", interactive=False, height=420,
                                 format="png", buttons=["download"]),
                        "model_view",
                    )
            with gr.Row():
                entropy = plot("Attention entropy", "entropy_heatmap")
                rollout = plot("Attention rollout", "rollout_heatmap")
            sinks = plot("Attention sinks", "sinks_figure")
        with gr.Tab("LayerNorm"):
            ln_scale = plot("1/σ per LayerNorm and token", "scale_heatmap")
            ln_table = captioned(gr.Dataframe(label="LayerNorm statistics", interactive=False), "stats_table")
            ln_choice = gr.Dropdown(label="LayerNorm", choices=[], interactive=True)
            gamma_beta = plot("γ and β", "gamma_beta_figure")
            abs_input = plot("|input| per dimension", "abs_input_heatmap")
        with gr.Tab("Residual stream"):
            resid_norm = plot("Residual norm per layer", "norm_figure")
            sublayer = plot("Sublayer outputs", "sublayer_figure")
            massive = plot("Massive activations", "massive_figure")
        with gr.Tab("Logit lens"):
            lens = plot("Logit lens", "lens_figure")
        with gr.Tab("Export"):
            exports = gr.File(label="Statistics as CSV and JSON", file_count="multiple", interactive=False)
    panel = InsidePanel(layer, head)
    panel.components = {key: value for key, value in locals().items() if key in INSIDE_KEYS}
    return panel


def model_picker(settings: Settings, handlers: Handlers, task: str, label: str = "Model") -> gr.Dropdown:
    """A model dropdown; in public mode only the allow-list, otherwise also free Hub ids and local paths."""
    default = settings.defaults[task]
    picker = gr.Dropdown(
        choices=settings.models,
        value=default,
        label=label,
        allow_custom_value=not settings.public,
        info=None if settings.public else "A bundled name, a Hub id or a local checkpoint directory.",
    )
    loaded = gr.State(default)
    picker.change(handlers.pick_model, [picker, loaded], [picker, loaded], api_visibility="private",
                  concurrency_id=MODEL_EVENTS)
    return picker


COMPARE_TEXT = "In the beginning God created the heaven and the <mask>."
TEACHING_INTRO = """Pre-LN puts each LayerNorm on the way **into** a sublayer; post-LN (the original Transformer, BERT and
RoBERTa) puts it **after** each residual addition. Here the same text goes through two models, by default the
bundled twins, which were trained on the same data with the same recipe and differ only in that placement."""


OUTLIER_INTRO = """## Outlier dimensions
Trained LayerNorms grow a few dimensions with outsized γ and β (the LayerNorm tab flags them). Do the models rely
on them? Switch them off in every LayerNorm of both models, on the text above, and compare with random
dimensions."""


def top_k_limit(widest: int) -> int:
    """A top-k slider's maximum: `widest`, or less if the request budget allows less."""
    return min(widest, budgets.current().max_top_k)


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


def build_demo(settings: Settings) -> gr.Blocks:
    """The whole app for these settings (which also set the engine's request budgets: they are per process)."""
    budgets.configure(**settings.budgets)
    registry = ModelRegistry(settings.models, settings.public, settings.cache_size)
    # No more traces than sessions Gradio keeps: beyond that they mostly belong to sessions it has let go.
    handlers = Handlers(registry, TraceStore(settings.trace_memory_mb * 2**20, max_traces=settings.max_sessions))
    # Undocumented rather than private: tests and the benchmark call the tab events as a browser would.
    run = dict(concurrency_id=MODEL_EVENTS, api_visibility="undocumented", show_progress=MODEL_PROGRESS)
    with gr.Blocks(title="PreLN Explorer", delete_cache=settings.cache_schedule) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Fill-mask"):
            model = model_picker(settings, handlers, "fill-mask")
            with gr.Row():
                text = gr.Textbox(label="Text with one or more <mask>", value=EXAMPLES["fill-mask"][0][0], scale=4)
                top_k = gr.Slider(1, top_k_limit(20), value=5, step=1, label="Top k", scale=1)
            button = gr.Button("Predict", variant="primary")
            gr.Examples(EXAMPLES["fill-mask"], inputs=[text])
            notices = gr.Markdown()
            with gr.Row():
                table = gr.Dataframe(label="Predictions (click one to fill it in)", interactive=False, wrap=True,
                                     column_widths=["10%", "10%", "18%", "16%", "46%"])
                chart = plot("Scores", "fill_mask_figure")
            panel = inside_panel()
            record = gr.State()  # a TraceRecord: the run's key in the trace store and its inputs, never the trace
            button.click(user_errors(handlers.fill_mask), [model, text, top_k, record],
                         [notices, table, chart, *panel.outputs, record], api_name="ui_fill_mask", **run)
            table.select(Handlers.fill_in, [text], [text], api_visibility="private")
            panel.wire(handlers, record)

        with gr.Tab("Classification"):
            model = model_picker(settings, handlers, "classification")
            text = gr.Textbox(label="Text", value=EXAMPLES["classification"][0][0])
            pair = gr.Textbox(label="Second text (optional, for pair tasks)")
            button = gr.Button("Classify", variant="primary")
            gr.Examples(EXAMPLES["classification"], inputs=[text, pair])
            notices = gr.Markdown()
            with gr.Row():
                chart = plot("Label scores", "classification_figure")
                table = gr.Dataframe(label="Labels", interactive=False)
            panel = inside_panel()
            record = gr.State()
            button.click(user_errors(handlers.classify), [model, text, pair, record],
                         [notices, chart, table, *panel.outputs, record], api_name="ui_classify", **run)
            panel.wire(handlers, record)

        with gr.Tab("Question answering"):
            model = model_picker(settings, handlers, "qa")
            question = gr.Textbox(label="Question", value=EXAMPLES["qa"][0][0])
            context = gr.Textbox(label="Context", value=EXAMPLES["qa"][0][1], lines=5)
            with gr.Row():
                top_k = gr.Slider(1, top_k_limit(10), value=3, step=1, label="Answers")
                impossible = gr.Checkbox(label="Allow 'no answer'", value=False)
            button = gr.Button("Answer", variant="primary")
            gr.Examples(EXAMPLES["qa"], inputs=[question, context])
            notices = gr.Markdown()
            highlight = captioned(gr.HTML(label="Answer in context"), "qa_highlight_html")
            with gr.Row():
                table = gr.Dataframe(label="Answers", interactive=False, wrap=True)
                chart = plot("Start and end logits", "qa_logits_figure")
            panel = inside_panel()
            record = gr.State()
            button.click(user_errors(handlers.answer), [model, question, context, top_k, impossible, record],
                         [notices, highlight, table, chart, *panel.outputs, record], api_name="ui_answer", **run)
            panel.wire(handlers, record)

        with gr.Tab("Pre-LN vs Post-LN"):
            teaching, curve_inputs, curve_outputs = teaching_tab(settings, handlers, run)
        # The API's defaults are what the page starts with, so `client.predict(text=..., api_name="/fill_mask")`
        # needs no model name; its errors are plain text, not the toast's HTML.
        defaults = settings.defaults
        gr.api(api_endpoint(handlers.fill_mask_api, model=defaults["fill-mask"]), api_name="fill_mask",
               concurrency_id=MODEL_EVENTS)
        gr.api(api_endpoint(handlers.classify_api, model=defaults["classification"]), api_name="classify",
               concurrency_id=MODEL_EVENTS)
        gr.api(api_endpoint(handlers.answer_api, model=defaults["qa"]), api_name="answer", concurrency_id=MODEL_EVENTS)
        gr.api(api_endpoint(teaching.compare_api, left=defaults["compare-left"], right=defaults["compare-right"]),
               api_name="compare", concurrency_id=MODEL_EVENTS)
        gr.api(api_endpoint(handlers.ablate_api, model=defaults["fill-mask"]), api_name="ablate",
               concurrency_id=MODEL_EVENTS)
        # The recorded curves are files, not a model run: draw them as the page opens.
        demo.load(user_errors(teaching.training_curves), list(curve_inputs), list(curve_outputs),
                  api_visibility="private")
    # In public mode every run joins the queue: Gradio's direct route (POST /gradio_api/run/<name>) would let
    # one visitor overtake the queue and start runs without limit beside it. Locally, scripts may use it.
    demo.queue(default_concurrency_limit=1, api_open=not settings.public)
    # Gradio takes these limits only in launch(); bound here, they hold however the app is launched
    # (`python app.py`, Spaces, a test or a notebook that imports `demo`).
    demo.launch = functools.partial(demo.launch, **settings.launch_options)
    return demo


# Spaces and `gradio app.py` import this module and look for `demo`; flags only count when run as a script.
settings = from_environment(sys.argv[1:] if __name__ == "__main__" else [])
if warning := exposure_warning(settings):
    logging.getLogger("rpln_app").warning(warning)
demo = build_demo(settings)

if __name__ == "__main__":
    limit_threads(settings.threads)
    # Serve the page at once and let torch/transformers import meanwhile, before the first click.
    threading.Thread(target=import_engine, name="import-engine", daemon=True).start()
    demo.launch(server_name=settings.host, server_port=settings.port, css=".caption {font-size: 0.9em; opacity: 0.8}")
