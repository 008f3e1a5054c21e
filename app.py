"""PreLN Explorer: the Gradio app. Layout and wiring only; the work happens in rpln_core, viz and rpln_app.

Run `python app.py` (flags: --host, --port, --models, --public/--no-public, --threads).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading

import gradio as gr

from rpln_app.handlers import Handlers, api_endpoint, import_engine, user_errors
from rpln_app.registry import ModelRegistry, limit_threads
from rpln_app.settings import Settings, exposure_warning, from_environment
from rpln_app.trace_store import TraceStore
from rpln_app.ui.lesson_tab import teaching_tab
from rpln_app.ui.task_tabs import classification_tab, fill_mask_tab, qa_tab
from rpln_app.ui.widgets import MODEL_EVENTS, MODEL_PROGRESS
from rpln_core import budgets

INTRO = """# PreLN Explorer
Type a sentence and see what a **pre-layer-norm RoBERTa** predicts, and what happened inside it on the way:
attention, every LayerNorm's statistics, the residual stream and the logit lens, all from the same forward pass."""


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
            fill_mask_tab(settings, handlers, run)
        with gr.Tab("Classification"):
            classification_tab(settings, handlers, run)
        with gr.Tab("Question answering"):
            qa_tab(settings, handlers, run)

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
