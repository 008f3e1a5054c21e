"""PreLN Explorer: the Gradio app. Layout and wiring only; the work happens in rpln_core, viz and rpln_app.

Run `python app.py` (flags: --host, --port, --models, --public/--no-public, --threads).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time

import gradio as gr

from rpln_app.arrivals import Arrivals
from rpln_app.handlers import api_endpoint, import_engine
from rpln_app.head_handlers import HeadHandlers
from rpln_app.registry import ModelRegistry, limit_threads
from rpln_app.settings import Settings, exposure_warning, from_environment
from rpln_app.trace_store import TraceStore
from rpln_app.ui.head_tabs import head_endpoints, head_tabs
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
    registry = ModelRegistry(settings.models, settings.public, settings.model_memory_mb)
    # No more traces than sessions Gradio keeps: beyond that they mostly belong to sessions it has let go.
    handlers = HeadHandlers(registry, TraceStore(settings.trace_memory_mb * 2**20, max_traces=settings.max_sessions))
    # Undocumented rather than private: tests and the benchmark call the tab events as a browser would.
    run = dict(concurrency_id=MODEL_EVENTS, api_visibility="undocumented", show_progress=MODEL_PROGRESS)
    with gr.Blocks(title="PreLN Explorer", delete_cache=settings.cache_schedule) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Fill-mask"):
            task_tabs = [fill_mask_tab(settings, handlers, run)]
        with gr.Tab("Classification"):
            task_tabs.append(classification_tab(settings, handlers, run))
        with gr.Tab("Question answering"):
            task_tabs.append(qa_tab(settings, handlers, run))
        task_tabs += head_tabs(settings, handlers, run)  # token classification, multiple choice, generation
        # Each task tab opens with its example's results, computed once for all visitors (rpln_app.arrivals).
        # Not in the model's queue: a page load should not wait behind other visitors' runs.
        arrivals = Arrivals(handlers)
        for tab in task_tabs:
            demo.load(arrivals.add(tab.task, tab.first_run, len(tab.outputs), tab.model), None, tab.outputs,
                      api_name=f"first_{tab.task.replace('-', '_')}", api_visibility="private", concurrency_limit=None,
                      show_progress=MODEL_PROGRESS)

        with gr.Tab("Pre-LN vs Post-LN"):
            teaching, lesson_arrival = teaching_tab(settings, handlers, run)
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
        head_endpoints(settings, handlers)  # /tag, /choose, /generate
        # Every lesson step is drawn as the page opens: computed on the first load, then served from a cache.
        demo.load(lesson_arrival.fn, None, lesson_arrival.outputs, **lesson_arrival.options)
    # In public mode every run joins the queue: Gradio's direct route (POST /gradio_api/run/<name>) would let
    # one visitor overtake the queue and start runs without limit beside it. Locally, scripts may use it.
    demo.queue(default_concurrency_limit=1, api_open=not settings.public)
    # Gradio takes these limits only in launch(); bound here, they hold however the app is launched
    # (`python app.py`, Spaces, a test or a notebook that imports `demo`).
    # The lesson's first results too (rpln_app.ui.lesson_tab keeps them), so no first visitor waits for either.
    first_results = (arrivals.warm, lesson_arrival.fn)
    demo.launch = warming_up(demo, functools.partial(demo.launch, **settings.launch_options), *first_results)
    return demo


def warming_up(demo: gr.Blocks, launch, *warm):
    """`launch` that also runs each of `warm` in a thread once the page is served (so start-up does not wait for
    them, nor compete with them for the cores), so that the first visitor finds the tabs' results ready."""

    def when_serving():
        while not demo.is_running:
            time.sleep(0.1)
        for compute in warm:
            try:
                compute()
            except Exception:  # noqa: BLE001 - a page load computes it again, and says what went wrong
                logging.getLogger("rpln_app").exception("computing the first results failed")

    @functools.wraps(launch)
    def start(*args, **kwargs):
        threading.Thread(target=when_serving, name=FIRST_RESULTS_THREAD, daemon=True).start()
        return launch(*args, **kwargs)

    return start


FIRST_RESULTS_THREAD = "first-results"


def wait_for_first_results(timeout: float | None = None) -> None:
    """Until the thread computing the first results of a launched app (warming_up) has ended: what a benchmark or
    a test measures beside it shares the cores with a dozen passes, and a process that exits while it is inside
    torch can abort."""
    for thread in threading.enumerate():
        if thread.name == FIRST_RESULTS_THREAD:
            thread.join(timeout)


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
