"""The task tabs (fill-mask, classification, question answering): inputs, the task's result, the inside panel.

Each tab returns what app.py needs to show its first results as the page opens (rpln_app.arrivals).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gradio as gr

from ..handlers import Handlers, user_errors
from ..pickers import token_limit_note
from ..settings import Settings
from .inside_panel import inside_panel
from .widgets import captioned, model_picker, plot, top_k_limit

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
FILL_MASK_TOP_K = 5
QA_TOP_K = 3


@dataclass
class TaskTab:
    """What app.py wires to the page load: the tab's run outputs (notices first, the record last) and the run of the
    example the page opens with."""

    task: str
    outputs: list
    first_run: Callable[[], list]
    model: str | None = None  # the model first_run uses: not run on arrival if it would need a download


def wire_runs(task: str, handlers: Handlers, fn: Callable, inputs: list, outputs: list, button: gr.Button,
              examples: gr.Examples, run: dict, api_name: str) -> list:
    """The button and a click on an example both run `fn`; a failed run says why in the notices (outputs[0]), and
    that the results still shown are the previous run's (inputs[-1], the record, names it). Returns both events,
    for what follows a run (the inside panel's wire)."""
    notices, record = outputs[0], inputs[-1]

    def failed(previous, request: gr.Request):
        return handlers.run_failed(task, previous, request)

    # Named, so that the handler's own name stays free for the gr.api endpoint of the same task.
    example_run = {**run, "api_visibility": "private", "api_name": f"{api_name}_example"}
    events = [button.click(user_errors(fn), inputs, outputs, api_name=api_name, **run),
              examples.load_input_event.then(user_errors(fn), inputs, outputs, **example_run)]
    for event in events:
        event.failure(failed, [record], [notices], api_visibility="private", queue=False)
    return events


def limit_follows_picker(picker: gr.Dropdown, box: gr.Textbox, task: str) -> None:
    """The text box's line about the token limit follows the chosen model."""
    picker.change(lambda name: gr.Textbox(info=token_limit_note(name, task) or ""), [picker], [box],
                  api_visibility="private", queue=False)


def fill_mask_tab(settings: Settings, handlers: Handlers, run: dict) -> TaskTab:
    """The Fill-mask tab: its inputs, result and inside-the-model panel."""
    default = settings.defaults["fill-mask"]
    model = model_picker(settings, handlers, "fill-mask")
    with gr.Row():
        text = gr.Textbox(label="Text with one or more <mask>", value=EXAMPLES["fill-mask"][0][0], scale=4,
                          info=token_limit_note(default, "fill-mask"))
        top_k = gr.Slider(1, top_k_limit(20), value=FILL_MASK_TOP_K, step=1, label="Top k", scale=1)
    button = gr.Button("Predict", variant="primary")
    examples = gr.Examples(EXAMPLES["fill-mask"], inputs=[text])
    notices = gr.Markdown()
    with gr.Row():
        table = gr.Dataframe(label="Predictions (click one to fill it in)", interactive=False, wrap=True,
                             headers=["mask", "rank", "token", "score", "sequence"],
                             column_widths=["10%", "10%", "18%", "16%", "46%"])
        chart = plot("Scores", "fill_mask_figure")
    panel = inside_panel()
    record = gr.State()  # a TraceRecord: the run's key in the trace store and its inputs, never the trace
    outputs = [notices, table, chart, *panel.outputs, record]
    runs = wire_runs("fill-mask", handlers, handlers.fill_mask, [model, text, top_k, record], outputs, button, examples,
                     run, "ui_fill_mask")
    limit_follows_picker(model, text, "fill-mask")
    table.select(Handlers.fill_in, [text], [text], api_visibility="private")
    panel.wire(handlers, record, runs)
    return TaskTab("fill-mask", outputs,
                   lambda: handlers.fill_mask(default, EXAMPLES["fill-mask"][0][0], FILL_MASK_TOP_K), default)


def classification_tab(settings: Settings, handlers: Handlers, run: dict) -> TaskTab:
    """The Classification tab: its inputs, result and inside-the-model panel."""
    default = settings.defaults["classification"]
    model = model_picker(settings, handlers, "classification")
    text = gr.Textbox(label="Text", value=EXAMPLES["classification"][0][0],
                      info=token_limit_note(default, "classification"))
    pair = gr.Textbox(label="Second text (optional, for pair tasks)")
    button = gr.Button("Classify", variant="primary")
    examples = gr.Examples(EXAMPLES["classification"], inputs=[text, pair])
    notices = gr.Markdown()
    with gr.Row():
        chart = plot("Label scores", "classification_figure")
        table = gr.Dataframe(label="Labels", interactive=False, headers=["label", "score"])
    panel = inside_panel()
    record = gr.State()
    outputs = [notices, chart, table, *panel.outputs, record]
    runs = wire_runs("classification", handlers, handlers.classify, [model, text, pair, record], outputs, button,
                     examples, run, "ui_classify")
    limit_follows_picker(model, text, "classification")
    panel.wire(handlers, record, runs)
    return TaskTab("classification", outputs,
                   lambda: handlers.classify(default, *EXAMPLES["classification"][0]), default)


def qa_tab(settings: Settings, handlers: Handlers, run: dict) -> TaskTab:
    """The Question answering tab: its inputs, result and inside-the-model panel."""
    default = settings.defaults["qa"]
    model = model_picker(settings, handlers, "qa")
    question = gr.Textbox(label="Question", value=EXAMPLES["qa"][0][0])
    context = gr.Textbox(label="Context", value=EXAMPLES["qa"][0][1], lines=5, info=token_limit_note(default, "qa"))
    with gr.Row():
        top_k = gr.Slider(1, top_k_limit(10), value=QA_TOP_K, step=1, label="Answers")
        impossible = gr.Checkbox(label="Allow 'no answer'", value=False)
    button = gr.Button("Answer", variant="primary")
    examples = gr.Examples(EXAMPLES["qa"], inputs=[question, context])
    notices = gr.Markdown()
    highlight = captioned(gr.HTML(label="Answer in context"), "qa_highlight_html")
    with gr.Row():
        # The answer wraps; score and positions keep their columns in view.
        table = gr.Dataframe(label="Answers", interactive=False, wrap=True, headers=["answer", "score", "start", "end"],
                             column_widths=["50%", "20%", "15%", "15%"])
        chart = plot("Start and end logits", "qa_logits_figure")
    panel = inside_panel()
    record = gr.State()
    outputs = [notices, highlight, table, chart, *panel.outputs, record]
    runs = wire_runs("qa", handlers, handlers.answer, [model, question, context, top_k, impossible, record], outputs,
                     button, examples, run, "ui_answer")
    limit_follows_picker(model, context, "qa")
    panel.wire(handlers, record, runs)
    return TaskTab("qa", outputs, lambda: handlers.answer(default, *EXAMPLES["qa"][0], QA_TOP_K, False), default)
