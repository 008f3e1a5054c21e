"""The tabs of the other heads: token classification, multiple choice and generation. Layout and wiring only; the
handlers are rpln_app.head_handlers.

Each tab lists only the models with its head; a tab whose head no listed model has says so instead of its inputs.
Those that have one open with their example's results, as the task tabs do (rpln_app.arrivals).
"""

from __future__ import annotations

import dataclasses

import gradio as gr

from rpln_core import budgets

from ..handlers import api_endpoint, user_errors
from ..head_handlers import (
    AGGREGATION_STRATEGIES,
    CANDIDATES,
    GENERATION,
    TAG_STRATEGY,
    HeadHandlers,
    last,
    no_model_message,
    starting_model,
)
from ..pickers import TAB_NAMES, token_limit_note
from ..settings import Settings
from .inside_panel import inside_panel
from .task_tabs import TaskTab, limit_follows_picker, wire_runs
from .widgets import MODEL_EVENTS, captioned, model_picker, plot

# Examples in the bundled models' domains, each answered right by them (tests/test_head_tabs.py checks):
# the part-of-speech tagger learned from WordNet glosses and the pre-training corpus, the chooser matches a word with
# its WordNet definition (both questions from its held-out split), and the decoder continues the corpus's prose.
EXAMPLES = {
    "token-classification": [
        ["The old man walked slowly to the small village near the river.", TAG_STRATEGY],
        ["wild parsley: any of various uncultivated plants with foliage resembling that of carrots", TAG_STRATEGY],
        # a word strategy where no two neighbouring words share a tag: it would join them into one row
        ["In the beginning God created the heaven and the earth.", "average"],
    ],
    "multiple-choice": [
        ["numerator", ["the dividend of a fraction", "someone who pays taxes",
                       "a visit in an official capacity to examine a site",
                       "an abraded area where the skin is torn or worn off"]],
        ["brain-worker", ["saliva spilling from the mouth",
                          "someone whose profession involves using his head to solve problems", "a genus of bacteria",
                          "(endocrinology) organ most affected by a particular hormone"]],
    ],
    "causal-lm": [["In the beginning God created"], ["The president spoke to the"], ["This movie is"]],
}


def head_tabs(settings: Settings, handlers: HeadHandlers, run: dict) -> list[TaskTab]:
    """Lay out the three tabs; returns the TaskTabs of those that have a model, for app.py's first results."""
    tabs = []
    for task, build in (("token-classification", tagging_tab), ("multiple-choice", choice_tab),
                        ("causal-lm", generation_tab)):
        with gr.Tab(TAB_NAMES[task]):
            start = starting_model(settings, task)
            if start is None:
                gr.Markdown(no_model_message(task))
                continue
            # The picker starts where the tab does (the settings' default may name a model that is not there).
            tabs.append(build(dataclasses.replace(settings, defaults={**settings.defaults, task: start}), handlers,
                              run))
    return tabs


def head_endpoints(settings: Settings, handlers: HeadHandlers) -> None:
    """The named API endpoints /tag, /choose and /generate, with the tabs' starting model and settings as defaults.
    With no model of a head, `model` has no default and the endpoint says so."""
    for task, fn, name in (("token-classification", handlers.tag_api, "tag"),
                           ("multiple-choice", handlers.choose_api, "choose"),
                           ("causal-lm", handlers.generate_api, "generate")):
        gr.api(api_endpoint(fn, model=starting_model(settings, task) or ""), api_name=name,
               concurrency_id=MODEL_EVENTS)


def tagging_tab(settings: Settings, handlers: HeadHandlers, run: dict) -> TaskTab:
    """The Token classification tab: the text highlighted by label, the entities, every token's label scores."""
    task = "token-classification"
    default = settings.defaults[task]
    model = model_picker(settings, handlers, task)
    with gr.Row():
        text = gr.Textbox(label="Text", value=EXAMPLES[task][0][0], scale=4, info=token_limit_note(default, task))
        strategy = gr.Dropdown(list(AGGREGATION_STRATEGIES), value=TAG_STRATEGY, label="Aggregation strategy",
                               scale=1, info="How tokens become rows, as in transformers' pipeline")
    button = gr.Button("Tag", variant="primary")
    examples = gr.Examples(EXAMPLES[task], inputs=[text, strategy])
    notices = gr.Markdown()
    # Each piece's label inline (Gradio shows it only without the legend): a part-of-speech tagger has dozens.
    highlight = captioned(gr.HighlightedText(label="Tagged text", show_legend=False), "tag_spans")
    table = gr.Dataframe(label="Entities", interactive=False, wrap=True)
    chart = plot("Label scores per token", "token_scores_figure")
    panel = inside_panel()
    record = gr.State()
    outputs = [notices, highlight, table, chart, *panel.outputs, record]
    runs = wire_runs(task, handlers, handlers.tag, [model, text, strategy, record], outputs, button, examples, run,
                     "ui_tag")
    limit_follows_picker(model, text, task)
    panel.wire(handlers, record, runs)
    return TaskTab(task, outputs, lambda: handlers.tag(default, *EXAMPLES[task][0]))


def choice_tab(settings: Settings, handlers: HeadHandlers, run: dict) -> TaskTab:
    """The Multiple choice tab: each choice's score, and the inside views of any one choice's pass."""
    task = "multiple-choice"
    default = settings.defaults[task]
    most = budgets.current().max_choices
    examples_rows = [[context, "\n".join(choices)] for context, choices in EXAMPLES[task]]
    model = model_picker(settings, handlers, task)
    context = gr.Textbox(label="Context (or question)", value=examples_rows[0][0], info=token_limit_note(default, task))
    choices = gr.Textbox(label=f"Choices, one per line (2 to {most})", value=examples_rows[0][1], lines=4)
    button = gr.Button("Score the choices", variant="primary")
    examples = gr.Examples(examples_rows, inputs=[context, choices])
    notices = gr.Markdown()
    with gr.Row():
        chart = plot("Choice scores", "choice_figure")
        table = gr.Dataframe(label="Choices", interactive=False, wrap=True, elem_id="choice-scores",
                             headers=["#", "choice", "score", "logit", "rank"],
                             column_widths=["7%", "48%", "15%", "15%", "15%"])
    shown = gr.Radio(label="Show the inside of choice", choices=[],
                     info="Each choice is its own pass through the model; the views below show the one picked here.")
    differing = captioned(gr.HighlightedText(label="Its input, as the model read it", show_legend=True,
                                             combine_adjacent=True, color_map={"differs": "#f4a261"}),
                          "differing_spans")
    panel = inside_panel()
    record = gr.State()
    outputs = [notices, chart, table, shown, differing, *panel.outputs, record]
    runs = wire_runs(task, handlers, handlers.choose, [model, context, choices, record], outputs, button, examples, run,
                     "ui_choose")
    limit_follows_picker(model, context, task)
    # Not in the model's queue, like the panel's own re-drawing: it runs no model unless the run was evicted.
    runs.append(shown.input(user_errors(handlers.show_choice), [record, shown], [differing, *panel.outputs, record],
                            api_visibility="private"))
    panel.wire(handlers, record, runs)
    return TaskTab(task, outputs, lambda: handlers.choose(default, *examples_rows[0]))


def generation_tab(settings: Settings, handlers: HeadHandlers, run: dict) -> TaskTab:
    """The Generation tab: the text as it comes, each step's candidates, the logit lens step by step."""
    task = "causal-lm"
    default = settings.defaults[task]
    model = model_picker(settings, handlers, task)
    prompt = gr.Textbox(label="Prompt", value=EXAMPLES[task][0][0], info=token_limit_note(default, task))
    with gr.Row():
        max_new_tokens = gr.Slider(1, budgets.current().max_new_tokens, value=GENERATION["max_new_tokens"], step=1,
                                   label="Max new tokens")
        sample = gr.Checkbox(label="Sample (otherwise greedy: always the most probable token)",
                             value=GENERATION["do_sample"])
    with gr.Row(visible=GENERATION["do_sample"]) as sampling:
        temperature = gr.Slider(0.05, 2.0, value=GENERATION["temperature"], step=0.05, label="Temperature")
        top_k = gr.Slider(0, 200, value=GENERATION["top_k"], step=1, label="Top k (0: every token)")
        top_p = gr.Slider(0.05, 1.0, value=GENERATION["top_p"], step=0.05, label="Top p")
        seed = gr.Number(value=GENERATION["seed"], precision=0, label="Seed (the same seed, the same text)")
    button = gr.Button("Generate", variant="primary")
    examples = gr.Examples(EXAMPLES[task], inputs=[prompt])
    notices = gr.Markdown()
    text = gr.HighlightedText(label="Prompt and generated text", color_map={"generated": "#9ecae1"},
                              show_legend=False, show_inline_category=False)
    # Full width, one below the other: a column per step needs the page's width.
    chart = plot(f"Top {CANDIDATES} candidates at each step", "candidates_figure")
    table = gr.Dataframe(label="Steps", interactive=False, wrap=True, max_height=300,
                         headers=["step", "token", "probability", "candidates"],
                         column_widths=["8%", "16%", "14%", "62%"])
    lens_step = gr.Slider(1, 2, value=1, step=1, label="Logit lens at step", interactive=False)
    lens = plot("Logit lens at this step", "step_lens_figure")
    panel = inside_panel()
    record = gr.State()
    outputs = [notices, text, chart, table, lens_step, lens, *panel.outputs, record]
    settings_inputs = [max_new_tokens, sample, temperature, top_k, top_p, seed]
    runs = wire_runs(task, handlers, handlers.generate, [model, prompt, *settings_inputs, record], outputs, button,
                     examples, run, "ui_generate")
    limit_follows_picker(model, prompt, task)
    sample.change(lambda on: gr.Row(visible=on), [sample], [sampling], api_visibility="private", queue=False)
    lens_step.release(user_errors(handlers.step_lens), [record, lens_step], [lens], api_visibility="private")
    panel.wire(handlers, record, runs)
    return TaskTab(task, outputs, lambda: last(handlers.generate(default, EXAMPLES[task][0][0], **GENERATION)))
