"""Pieces every tab uses: captions under figures, plots, the model picker, the top-k limit, event settings."""

from __future__ import annotations

import gradio as gr

from rpln_core import budgets
from viz.captions import CAPTIONS

from ..handlers import Handlers
from ..settings import Settings

MODEL_EVENTS = "model"  # one concurrency group: parallel users queue for the model instead of exhausting memory
# While a model runs, "full" progress animates a pulsing overlay on every output. A browser drawing that in
# software on the server's cores (`python app.py` on a laptop, our 2-core machines) slowed the large model's
# handler from 1.1 s to 1.6 s; "minimal" keeps the running timer on each output and costs nothing measurable.
MODEL_PROGRESS = "minimal"


def caption(name: str) -> gr.Markdown:
    return gr.Markdown(CAPTIONS[name], elem_classes=["caption"])



def captioned(component, name: str):
    """`component` with the plain-language caption of the figure function `name` under it."""
    caption(name)
    return component


def plot(label: str, name: str) -> gr.Plot:
    with gr.Column():
        return captioned(gr.Plot(label=label), name)


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


def top_k_limit(widest: int) -> int:
    """A top-k slider's maximum: `widest`, or less if the request budget allows less."""
    return min(widest, budgets.current().max_top_k)
