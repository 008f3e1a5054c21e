"""The token classification, multiple choice and generation tabs and their endpoints, on tiny random checkpoints:
each tab's handler gives its result and the inside views, user text stays text, bad input gets a message naming the
field, and /tag, /choose and /generate answer gradio_client as the engine does."""

from __future__ import annotations

import gradio as gr
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError

from rpln_app.arrivals import Arrivals
from rpln_app.head_handlers import (
    AGGREGATION_STRATEGIES,
    GENERATION,
    INSIDE_COUNT,
    ChoiceRecord,
    HeadHandlers,
    last,
    starting_model,
)
from rpln_app.registry import ModelRegistry
from rpln_app.settings import DEFAULT_MODELS, Settings
from rpln_app.trace_store import trace_nbytes
from rpln_app.ui.head_tabs import head_tabs
from rpln_app.ui.widgets import MODEL_EVENTS
from rpln_core import choose, generate, load_model, tag
from rpln_core.tasks import tag as tag_module
from viz.text import visible_token

HOSTILE = "<img src=x onerror=alert(1)>"
TEXT = f"The {HOSTILE} sat on the mat in Paris."
CONTEXT = "numerator"
CHOICES = ["the dividend of a fraction", "someone who pays taxes", "a visit to examine a site"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference(head_checkpoints):
    """The three checkpoints loaded here once, as the references the app's answers are checked against.

    Loaded before the app serves: transformers builds a model on its "meta" device under a process-wide switch,
    so a load in this thread beside one in the app's (its first results load every model) can break either."""
    return {task: load_model(directory) for task, directory in head_checkpoints.items()}


@pytest.fixture(scope="module")
def handlers(head_checkpoints):
    return HeadHandlers(ModelRegistry(list(head_checkpoints.values()), public=True))


@pytest.fixture(scope="module")
def client(reference, head_app_server):
    return Client(head_app_server.url, verbose=False)


def generated_text(spans) -> str:
    return "".join(text for text, label in spans if label == "generated")


# --- token classification


def test_the_page_offers_the_engines_aggregation_strategies():
    assert AGGREGATION_STRATEGIES == tag_module.AGGREGATION_STRATEGIES


def test_the_tagged_text_is_the_typed_text_piece_by_piece_with_the_engines_labels(handlers, head_checkpoints,
                                                                                 reference):
    model = head_checkpoints["token-classification"]
    notices, spans, table, chart, *inside, record = handlers.tag(model, TEXT, "simple")
    direct = tag(reference["token-classification"], TEXT, aggregation_strategy="simple")
    # gr.HighlightedText shows each piece as text: the typed tag reaches it whole, as characters, never as HTML
    assert "".join(text for text, _ in spans) == TEXT
    assert [(text, label) for text, label in spans if label] == [
        (TEXT[e.start : e.end], e.label) for e in direct.entities if e.end > e.start
    ]
    assert list(table.columns) == ["entity_group", "score", "text", "start", "end"]
    assert table["entity_group"].tolist() == [e.label for e in direct.entities]
    assert table["text"].tolist() == [TEXT[e.start : e.end] for e in direct.entities]  # as typed, not "Ġcat"
    heatmap = chart.data[0]
    assert list(heatmap.y) == direct.labels and len(heatmap.x) == len(direct.trace.tokens)
    assert not any("<" in tick for tick in heatmap.x) and "3·&lt;" in heatmap.x  # plotly labels read HTML
    assert len(inside) == INSIDE_COUNT and all(value is not None for value in inside[:7])  # the Attention tab's
    assert record.task == "token-classification" and record.inputs["aggregation_strategy"] == "simple"


# --- multiple choice


def test_each_choice_is_scored_and_the_inside_views_switch_between_their_passes(handlers, head_checkpoints, reference):
    model = head_checkpoints["multiple-choice"]
    notices, chart, table, picker, differing, *inside, record = handlers.choose(model, CONTEXT, "\n".join(CHOICES))
    direct = choose(reference["multiple-choice"], CONTEXT, CHOICES)
    assert table["score"].tolist() == pytest.approx([c.score for c in direct.choices], abs=1e-4)
    assert table["#"].tolist() == [1, 2, 3] and list(chart.data[0].x) == pytest.approx(table["score"].tolist(),
                                                                                     abs=1e-3)
    assert picker.value == direct.best and [value for _, value in picker.choices] == [0, 1, 2]
    assert isinstance(record, ChoiceRecord) and record.shown == direct.best
    # one store entry holds every choice's pass, and its bytes are all counted
    stored = handlers.traces.get(record.key)
    assert len(stored) == 3 and handlers.traces.nbytes >= sum(trace_nbytes(trace) for trace in stored)
    for shown in range(3):
        spans, *views, switched = handlers.show_choice(record, shown)
        assert switched.shown == shown and len(views) == INSIDE_COUNT
        assert handlers.trace_of(switched).tokens.ids == direct.traces[shown].tokens.ids
        # the differing tokens are that choice's own words, and the shared context is not marked
        marked = "".join(text for text, label in spans if label == "differs")
        assert marked.replace(" ", "") == CHOICES[shown].replace(" ", "")
        assert CONTEXT in "".join(text for text, label in spans if label is None)


def test_an_evicted_choice_run_is_run_again_for_the_view_asked(handlers, head_checkpoints, reference, capsys):
    *_, record = handlers.choose(head_checkpoints["multiple-choice"], CONTEXT, "\n".join(CHOICES))
    handlers.traces.discard(record.key)
    trace = handlers.trace_of(ChoiceRecord(**{**record.__dict__, "shown": 1}))
    assert "recomputed" in capsys.readouterr().out  # gr.Info outside an event prints
    assert len(handlers.traces.get(record.key)) == 3  # every choice is kept again, under the same key
    assert trace.tokens.ids == choose(reference["multiple-choice"], CONTEXT, CHOICES).traces[1].tokens.ids


# --- generation


def test_generation_streams_each_token_then_every_view(handlers, head_checkpoints, reference):
    model = head_checkpoints["causal-lm"]
    stream = list(handlers.generate(model, "In the beginning", 6, False, 1.0, 50, 1.0, 0))
    direct = generate(reference["causal-lm"], "In the beginning", max_new_tokens=6)
    texts = [generated_text(values[1]) for values in stream]
    assert len(stream) == len(direct.steps) + 1  # one yield per token, then the traced views
    assert texts[-1] == direct.text and all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    assert all(value == gr.skip() for value in stream[0][4:])  # the views wait for the traced pass
    notices, spans, chart, table, lens_step, lens, *inside, record = stream[-1]
    assert table["token"].tolist() == [visible_token(step.token_str) for step in direct.steps]
    assert lens_step.maximum == len(direct.steps) and "Stopped after 6 tokens" in notices
    # greedy: every step took its most probable token, the top cell of its column, outlined
    assert [(shape.x0, shape.y0) for shape in chart.layout.shapes] == [(i - 0.5, -0.5) for i in range(6)]
    assert len(inside) == INSIDE_COUNT and record.inputs["max_new_tokens"] == 6
    # the inside views draw the causal pass: nothing above the diagonal
    attentions = handlers.trace_of(record).attentions
    assert torch.all(attentions.triu(diagonal=1) == 0)
    assert handlers.step_lens(record, len(direct.steps)) is not None


def test_seeded_sampling_is_kept_so_a_rerun_draws_the_same_tokens(handlers, head_checkpoints, reference, capsys):
    model = head_checkpoints["causal-lm"]
    *_, record = last(handlers.generate(model, "The", 8.0, True, 0.9, 20.0, 0.95, 7.0))
    assert record.inputs == dict(prompt="The", max_new_tokens=8, do_sample=True, temperature=0.9, top_k=20,
                                 top_p=0.95, seed=7, candidates=5)
    direct = generate(reference["causal-lm"], **record.inputs)
    handlers.traces.discard(record.key)
    assert handlers.trace_of(record).tokens.ids == direct.trace.tokens.ids
    assert "recomputed" in capsys.readouterr().out


# --- bad input


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda h, m: h.tag(m["token-classification"], "", "first"), "text"),
        (lambda h, m: h.tag(m["token-classification"], "A cat.", "bogus"), "aggregation_strategy"),
        (lambda h, m: h.tag(m["multiple-choice"], "A cat.", "first"), "use the Multiple choice tab"),
        (lambda h, m: h.choose(m["multiple-choice"], "ctx", "only one"), "Choices: write 2 to 8"),
        (lambda h, m: h.choose(m["multiple-choice"], "ctx", "\n".join("abcdefghi")), "got 9"),
        (lambda h, m: h.choose(m["multiple-choice"], "", "a\nb"), "context"),
        (lambda h, m: last(h.generate(m["causal-lm"], "The", 0, False, 1.0, 50, 1.0, 0)), "max_new_tokens"),
        (lambda h, m: last(h.generate(m["causal-lm"], "The", 65, False, 1.0, 50, 1.0, 0)), "max_new_tokens"),
        (lambda h, m: last(h.generate(m["causal-lm"], "The", 5, True, 0.0, 50, 1.0, 0)), "temperature"),
        (lambda h, m: last(h.generate(m["causal-lm"], "The", 5, True, 1.0, 50, 1.0, -1)), "seed"),
        (lambda h, m: last(h.generate(m["causal-lm"], "", 5, False, 1.0, 50, 1.0, 0)), "prompt"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_the_field(handlers, head_checkpoints, call, message):
    from rpln_core.errors import RplnError

    with pytest.raises(RplnError, match=message):
        call(handlers, head_checkpoints)


def test_the_streaming_handler_turns_errors_into_escaped_toasts():
    from rpln_app.handlers import user_errors

    local = HeadHandlers(ModelRegistry([], public=False))  # outside public mode a typed name is tried, and quoted
    with pytest.raises(gr.Error) as raised:
        last(user_errors(local.generate)(HOSTILE, "The", 5, False, 1.0, 50, 1.0, 0))
    assert "<img" not in raised.value.message and "&lt;img src=x onerror=alert(1)&gt;" in raised.value.message


def test_every_chart_of_the_head_tabs_has_a_caption():
    from viz.captions import CAPTIONS

    drawn = {"tag_spans", "token_scores_figure", "choice_figure", "differing_spans", "candidates_figure",
             "step_lens_figure"}
    assert drawn <= set(CAPTIONS) and all(len(CAPTIONS[name]) > 40 for name in drawn)


# --- first results and a missing head


def test_each_head_tab_opens_with_its_examples_results(head_checkpoints):
    settings = Settings(public=True, models=list(head_checkpoints.values()), defaults={**DEFAULT_MODELS,
                                                                                        **head_checkpoints})
    handlers = HeadHandlers(ModelRegistry(settings.models, public=True))
    with gr.Blocks():
        tabs = head_tabs(settings, handlers, dict(concurrency_id=MODEL_EVENTS))
    assert [tab.task for tab in tabs] == ["token-classification", "multiple-choice", "causal-lm"]
    arrivals = Arrivals(handlers)
    for tab in tabs:
        outputs = arrivals.add(tab.task, tab.first_run, len(tab.outputs))()
        assert len(outputs) == len(tab.outputs) and outputs[0] is not None
        assert outputs[-1].key in handlers.traces and outputs[-1].key in handlers.shared_keys


def test_a_tab_without_a_model_of_its_head_says_so():
    import app as app_module

    settings = Settings(public=True, models=["preln-mini", "postln-mini"])
    assert starting_model(settings, "causal-lm") is None  # the twins are masked LMs
    config = app_module.build_demo(settings).config
    shown = [c["props"].get("value") or "" for c in config["components"] if c.get("type") == "markdown"]
    for head in ("token-classification", "multiple-choice", "text-generation (causal-LM)"):
        assert any(f"This app has no model with a {head} head" in text for text in shown), head


def test_a_settings_default_of_another_head_is_not_where_a_tab_starts(head_checkpoints):
    models = list(head_checkpoints.values())
    settings = Settings(public=True, models=models, defaults={**DEFAULT_MODELS, "causal-lm": models[0]})
    assert starting_model(settings, "causal-lm") == head_checkpoints["causal-lm"]


def test_the_tabs_examples_give_sensible_results_with_the_bundled_models():
    from rpln_app.ui.head_tabs import EXAMPLES
    from rpln_core.catalog import bundled_models

    names = {"token-classification": "preln-mini-pos", "multiple-choice": "preln-mini-choice",
             "causal-lm": "preln-mini-causal"}
    if not set(names.values()) <= set(bundled_models()):
        pytest.skip("the bundled head models are not in models/")
    tagger, chooser, decoder = (load_model(names[task]) for task in names)
    text, strategy = EXAMPLES["token-classification"][0]
    tags = {e.word.lstrip("Ġ"): e.label for e in tag(tagger, text, aggregation_strategy=strategy).entities}
    assert (tags["The"], tags["man"], tags["walked"], tags["slowly"], tags["near"]) == ("DT", "NN", "VBD", "RB", "IN")
    right = {"numerator": 0, "brain-worker": 1}  # the held-out questions' answers (data/choice_test.jsonl)
    for context, choices in EXAMPLES["multiple-choice"]:
        assert choose(chooser, context, choices).best == right[context], context
    prompt = EXAMPLES["causal-lm"][0][0]
    assert generate(decoder, prompt, **GENERATION).text.strip() == "the world."


# --- the API, as a user's script calls it


def test_tag_endpoint_returns_the_pipelines_rows_with_the_pages_strategy(client, head_checkpoints, reference):
    served = client.predict(text=TEXT, api_name="/tag")
    direct = tag(reference["token-classification"], TEXT)  # "none", as the page and the pipeline
    assert served["model"] == head_checkpoints["token-classification"]
    assert served["entities"] == direct.to_pipeline()  # floats survive JSON exactly
    assert served["token_labels"] == direct.token_labels and served["tokens"] == direct.trace.tokens.strings
    words = client.predict(text=TEXT, aggregation_strategy="first", api_name="/tag")["entities"]
    assert words == tag(reference["token-classification"], TEXT, aggregation_strategy="first").to_pipeline()


def test_choose_endpoint_scores_a_list_of_choices(client, reference):
    served = client.predict(context=CONTEXT, choices=CHOICES, api_name="/choose")
    direct = choose(reference["multiple-choice"], CONTEXT, CHOICES)
    assert served["choices"] == direct.to_dicts() and served["best"] == direct.best
    assert served["differing"] == direct.differing and len(served["choice_tokens"]) == 3


def test_generate_endpoint_returns_the_engines_text_and_candidates(client, reference):
    served = client.predict(prompt="In the beginning", max_new_tokens=5, api_name="/generate")
    direct = generate(reference["causal-lm"], "In the beginning", max_new_tokens=5)
    assert served["text"] == direct.text and served["stopped_by"] == direct.stopped_by
    assert [s["token"] for s in served["steps"]] == [s.token for s in direct.steps]
    assert len(served["steps"][0]["candidates"]) == 5
    sampled = client.predict(prompt="The", max_new_tokens=5, do_sample=True, seed=3, api_name="/generate")
    assert sampled == client.predict(prompt="The", max_new_tokens=5, do_sample=True, seed=3, api_name="/generate")


@pytest.mark.parametrize(
    "kwargs, api_name, message",
    [
        (dict(text="A cat.", aggregation_strategy=HOSTILE), "/tag", f"got '{HOSTILE}'"),  # plain text, not &lt;
        (dict(context="ctx", choices=["one"]), "/choose", "choices must be a list of 2 to 8"),
        (dict(context="ctx", choices="a\nb"), "/choose", "choices must be a list"),
        (dict(prompt="The", max_new_tokens=1000), "/generate", "max_new_tokens must be a whole number from 1 to 64"),
        (dict(prompt="The", top_p=1.5), "/generate", "top_p"),
        (dict(prompt="The", model="/etc"), "/generate", "public app serves only"),
    ],
)
def test_endpoints_refuse_bad_input_in_plain_text(client, kwargs, api_name, message):
    with pytest.raises(AppError, match=message.replace("(", r"\(").replace(")", r"\)")):
        client.predict(**kwargs, api_name=api_name)


def test_the_generation_tab_streams_through_the_queue(client, head_checkpoints):
    job = client.submit(head_checkpoints["causal-lm"], "In the beginning", 4, False, 1.0, 50, 1.0, 0,
                        api_name="/ui_generate")
    final = job.result()
    partial = job.outputs()[:-1]
    assert len(partial) >= 4  # a value per token before the last
    texts = ["".join(piece["token"] for piece in values[1] if piece["class_or_confidence"] == "generated")
             for values in partial]
    assert texts[0] and all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    assert final[0].startswith("- Stopped after 4 tokens")
