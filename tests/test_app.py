"""The app's API, served on a free local port and called with gradio_client, as a user's script would."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from rpln_app.handlers import Handlers, _fill, user_errors
from rpln_app.keys import DRAWN_ON_OPEN, INSIDE_KEYS
from rpln_app.registry import ModelRegistry
from rpln_core import answer, classify, fill_mask, load_model
from rpln_core.compare import compare as compare_models
from rpln_core.compare import comparison_summary
from rpln_core.errors import RplnError

HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"


@pytest.fixture(scope="module")
def models(app_server):
    return app_server.models


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server.url, verbose=False)


def test_fill_mask_endpoint_returns_the_engines_predictions(client, models):
    text = "The cat sat on the <mask>."
    served = client.predict(text=text, model=models["fill-mask"], top_k=3, api_name="/fill_mask")
    loaded = load_model(models["fill-mask"])
    direct = fill_mask(loaded, text, top_k=3)
    assert [p["token"] for p in served["predictions"]] == [p.token for p in direct.predictions[0]]
    assert served["predictions"][0]["score"] == pytest.approx(direct.predictions[0][0].score, abs=1e-6)
    assert served["tokens"] == direct.trace.tokens.strings
    assert len(served["layers"]) == loaded.num_layers and "resid_post_norm" in served["layers"][0]


def test_classify_endpoint_returns_the_engines_labels(client, models):
    served = client.predict(text="A good film.", model=models["classification"], api_name="/classify")
    direct = classify(load_model(models["classification"]), "A good film.")
    assert [row["label"] for row in served["labels"]] == [label.label for label in direct.labels]
    assert [row["score"] for row in served["labels"]] == pytest.approx([label.score for label in direct.labels])


def test_answer_endpoint_returns_spans_of_the_context(client, models):
    context = "The king wrote the letter in 1790."
    served = client.predict(question="Who wrote it?", context=context, model=models["qa"], top_k=2, api_name="/answer")
    direct = answer(load_model(models["qa"]), "Who wrote it?", context, top_k=2)
    assert [a["answer"] for a in served["answers"]] == [a.answer for a in direct.answers]
    assert all(context[a["start"] : a["end"]] == a["answer"] for a in served["answers"])


def test_the_tabs_examples_give_sensible_results_with_the_bundled_models(client, models):
    from rpln_app.ui.task_tabs import EXAMPLES

    def top5(text: str) -> list[list[str]]:
        served = client.predict(text=text, model=models["fill-mask"], top_k=5, api_name="/fill_mask")
        rows = served["predictions"] if isinstance(served["predictions"][0], list) else [served["predictions"]]
        return [[p["token_str"].strip() for p in row] for row in rows]

    president, genesis, movie = (example[0] for example in EXAMPLES["fill-mask"])
    assert {"people", "nation", "country"} & set(top5(president)[0])
    assert {"heaven", "earth"} & set(top5(genesis)[0])
    first, second = top5(movie)
    assert {"good", "great", "bad"} & set(first) and "again" in second
    labels = [
        client.predict(text=text, model=models["classification"], api_name="/classify")["labels"][0]["label"]
        for text, _ in EXAMPLES["classification"]
    ]
    assert labels == ["positive", "negative"]
    question, context = EXAMPLES["qa"][0]
    served = client.predict(question=question, context=context, model=models["qa"], api_name="/answer")
    assert served["answers"][0]["answer"].startswith("bowed stringed instrument")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(text="", top_k=5), "empty"),
        (dict(text="No mask in here.", top_k=5), "no mask"),
        (dict(text="The <mask>.", top_k=5, model="FacebookAI/roberta-large"), "public app serves only"),
        (dict(text="The <mask>.", top_k=5, model="/etc"), "public app serves only"),
    ],
)
def test_bad_input_gets_a_message_and_the_app_keeps_serving(client, models, kwargs, message):
    kwargs.setdefault("model", models["fill-mask"])
    with pytest.raises(AppError, match=message):
        client.predict(**kwargs, api_name="/fill_mask")
    again = client.predict(text="The <mask>.", model=models["fill-mask"], top_k=1, api_name="/fill_mask")
    assert len(again["predictions"]) == 1


def test_the_fill_mask_tab_returns_every_view(client, models):
    outputs = client.predict(models["fill-mask"], "The cat sat on the <mask>.", 5, api_name="/ui_fill_mask")
    notices, table, chart, layer, head, *inside = outputs  # the trace stays on the server, in session state
    assert table["data"][0][:2] == [1, 1]
    views = dict(zip(INSIDE_KEYS, inside))
    assert len(inside) == len(INSIDE_KEYS)
    # the Attention tab's views come with the run; the other tabs' (and the downloads) when each is opened
    later = {key for keys in DRAWN_ON_OPEN.values() for key in keys} | {"exports", "bertviz_download"}
    assert all(views[key] is not None for key in INSIDE_KEYS if key not in later)
    assert [key for key in later - {"ln_choice", "ln_table", "bertviz_download"} if views[key] is not None] == []
    assert views["ln_table"]["data"] == [] and views["ln_table"]["headers"][:2] == ["name", "module"]


def test_user_text_reaches_html_only_escaped(client, models):
    context = f"The king {HOSTILE} wrote the letter."
    outputs = client.predict(models["qa"], "Who?", context, 2, False, api_name="/ui_answer")
    highlight = outputs[1]
    assert "<script" not in highlight and "<img" not in highlight
    assert "&lt;script&gt;" in highlight and "&lt;img src=x onerror=alert(1)&gt;" in highlight


def test_a_model_that_cannot_be_loaded_keeps_the_previous_one(models):
    handlers = Handlers(ModelRegistry([models["fill-mask"]], public=False))
    assert handlers.pick_model("/no/such/checkpoint", models["fill-mask"]) == (models["fill-mask"],) * 2
    assert handlers.pick_model(models["fill-mask"], "old") == (models["fill-mask"],) * 2


def test_clicking_a_prediction_fills_that_mask_as_the_model_would_write_it():
    assert _fill("The <mask> sat on the <mask>.", "<mask>", 2, " mat") == "The <mask> sat on the mat."
    assert _fill("The <mask> sat.", "<mask>", 1, " cat") == "The cat sat."


def test_notices_reach_markdown_with_no_html_and_no_markdown_syntax():
    from rpln_app.handlers import notices_markdown

    shown = notices_markdown([f"[MASK] was read as the model's {HOSTILE}"])
    assert "<" not in shown and "&lt;script&gt;" in shown
    assert r"\[MASK\]" in shown and "model's" in shown


def test_event_handlers_hints_resolve_so_gradio_can_pass_select_data():
    """Gradio finds the SelectData parameter through the type hints; an unresolvable hint silently drops it."""
    import typing

    import gradio as gr

    assert typing.get_type_hints(Handlers.model_view_click)["evt"] is gr.SelectData
    assert typing.get_type_hints(Handlers.fill_in)["evt"] is gr.SelectData
    for handler in (Handlers.attention_views, Handlers.gamma_beta):
        typing.get_type_hints(handler)


# --- the Pre-LN vs Post-LN tab


def test_compare_endpoint_returns_both_models_numbers(client, models):
    text = "In the beginning God created the heaven and the <mask>."
    served = client.predict(text=text, api_name="/compare")  # the defaults: the bundled twins
    direct = compare_models(load_model("preln-mini"), load_model("postln-mini"), text)
    assert served == json.loads(json.dumps(comparison_summary(direct)))
    left, right = served["left"], served["right"]
    assert (left["architecture"], right["architecture"]) == ("pre-ln", "post-ln")
    assert left["layer_steps"][0] == "LayerNorm" and right["layer_steps"][-1] == "LayerNorm"
    # the textbook contrast, on trained weights: pre-LN's stream grows layer by layer, post-LN's does not
    assert left["residual"]["growth_factor"] > 1.05 > right["residual"]["growth_factor"]
    assert {"earth", "heaven"} & {p["token"].strip() for p in left["fill_mask"][0]}


def test_the_compare_tab_returns_every_view_and_downloads(client, models):
    outputs = client.predict(models["fill-mask"], models["post-ln"], "The <mask> sat.", 3, api_name="/ui_compare")
    notices, *figures, table, files = outputs
    assert all(isinstance(figure, dict) and figure.get("plot") for figure in figures)
    assert len(figures) == 5 and table["data"] and len(table["data"]) == 3
    assert {Path(f).suffix for f in files} == {".csv", ".json"}


def test_the_outlier_section_runs_both_models_and_names_one_that_cannot_take_part(client, models):
    text = "In the beginning God created the heaven and the <mask>."
    notices, figure, table, files = client.predict(models["fill-mask"], models["post-ln"], text, 2, 0,
                                                   api_name="/ui_ablation")
    assert notices == "" and figure.get("plot")
    assert {row[0] for row in table["data"]} == {models["fill-mask"], models["post-ln"]}
    assert len(table["data"]) == 2 * (2 + 2)  # two models x (intact, outliers off, two random controls), one mask
    assert {Path(f).suffix for f in files} == {".csv", ".json"}
    notices, *_ = client.predict(models["classification"], models["post-ln"], text, 2, 0, api_name="/ui_ablation")
    assert "no fill" in notices and models["classification"] in notices.replace("\\", "")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(text=""), "empty"),
        (dict(text="The <mask>.", left="/etc"), "only these models"),
    ],
)
def test_compare_refuses_bad_input_with_a_message(client, kwargs, message):
    with pytest.raises(AppError, match=message):
        client.predict(**kwargs, api_name="/compare")


def test_the_experiment_at_initialisation_runs_and_refuses_a_bad_std(client):
    *figures, files = client.predict(4, 64, None, 0, api_name="/init_experiment")
    assert len(figures) == 3 and all(figure.get("plot") for figure in figures)
    assert {Path(f).suffix for f in files} == {".csv", ".json"}
    with pytest.raises(AppError, match="Init std"):
        client.predict(4, 64, 0.9, 0, api_name="/init_experiment")


def test_error_and_warning_toasts_show_user_text_as_text():
    # Gradio renders toast messages as (sanitised) HTML: a typed tag would become an element
    handlers = Handlers(ModelRegistry([], public=False))
    with pytest.warns(UserWarning) as warned:
        handlers.pick_model(HOSTILE, "preln-mini")
    shown = str(warned[0].message)
    assert "<img" not in shown and "&lt;img src=x onerror=alert(1)&gt;" in shown

    def refuse():
        raise RplnError(f"'{HOSTILE}' cannot be loaded.")

    with pytest.raises(gr.Error) as raised:
        user_errors(refuse)()
    assert "<script>" not in raised.value.message and "&lt;script&gt;" in raised.value.message


def test_model_runs_show_a_timer_not_an_animated_overlay(client):
    # A pulsing overlay on every output, drawn in software by a browser on the server's cores, made the large
    # model's handler 40% slower (bench/bench_browser.py); the timer of "minimal" costs nothing measurable.
    events = {dep.get("api_name"): dep for dep in client.config["dependencies"]}
    for name in ("ui_fill_mask", "ui_classify", "ui_answer", "ui_compare", "ui_ablation", "init_experiment"):
        assert events[name]["show_progress"] == "minimal", name


def test_ablate_endpoint_switches_off_the_bundled_models_shared_outliers(client, models):
    from rpln_core.ablation import outlier_ablation

    text = "In the beginning God created the heaven and the <mask>."
    served = client.predict(text=text, model=models["fill-mask"], api_name="/ablate")
    direct = outlier_ablation(load_model(models["fill-mask"]), text)
    assert [run["condition"] for run in served["runs"]] == [run.condition for run in direct.runs]
    assert [run["dims"] for run in served["runs"]] == [run.dims for run in direct.runs]
    assert served["runs"][1]["kl_from_intact"] == pytest.approx(direct.runs[1].kl_from_intact, abs=1e-6)
    chosen = client.predict(text=text, model=models["fill-mask"], dims="5, 9", controls=1, api_name="/ablate")
    assert chosen["runs"][1]["dims"] == [5, 9] and len(chosen["runs"]) == 3
    with pytest.raises(AppError, match="whole numbers"):
        client.predict(text=text, model=models["fill-mask"], dims="five", api_name="/ablate")
