"""The task tabs (fill-mask, classification, question answering): inputs, the task's result, the inside panel."""

from __future__ import annotations

import gradio as gr

from ..handlers import Handlers, user_errors
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


def fill_mask_tab(settings: Settings, handlers: Handlers, run: dict) -> None:
    """The Fill-mask tab: its inputs, result and inside-the-model panel."""
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


def classification_tab(settings: Settings, handlers: Handlers, run: dict) -> None:
    """The Classification tab: its inputs, result and inside-the-model panel."""
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


def qa_tab(settings: Settings, handlers: Handlers, run: dict) -> None:
    """The Question answering tab: its inputs, result and inside-the-model panel."""
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
