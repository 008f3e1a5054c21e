"""Pieces every tab uses: captions under figures, plots, the model picker, the top-k limit, event settings."""

from __future__ import annotations

import gradio as gr

from rpln_core import budgets
from viz.captions import CAPTIONS

from ..handlers import Handlers
from ..pickers import HEAD_WORDS, TASKS, picker_choices
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
    """A model dropdown; in public mode only the allow-list, otherwise also free Hub ids and local paths.

    A task tab's picker (`task` in pickers.TASKS) lists only the models with that task's head, labelled with their
    size, and refuses a typed model with another head by naming the tab it belongs to."""
    default = settings.defaults[task]
    head = task if task in TASKS else None
    choices = picker_choices(settings.models, head) if head else list(settings.models)
    if default not in [choice[1] if isinstance(choice, tuple) else choice for choice in choices]:
        choices.insert(0, default)  # an operator's RPLN_DEFAULT_* of unknown head: still the starting value
    typed = "a Hub id or a local checkpoint directory"
    picker = gr.Dropdown(
        choices=choices,
        value=default,
        label=label,
        allow_custom_value=not settings.public,
        info=None if settings.public
        else f"Models with {HEAD_WORDS[head]} head, or {typed}." if head
        else f"A bundled name, {typed}.",
    )
    loaded = gr.State(default)
    picker.change(lambda name, previous: handlers.pick_model(name, previous, head), [picker, loaded],
                  [picker, loaded], api_visibility="private", concurrency_id=MODEL_EVENTS)
    return picker


def top_k_limit(widest: int) -> int:
    """A top-k slider's maximum: `widest`, or less if the request budget allows less."""
    return min(widest, budgets.current().max_top_k)
