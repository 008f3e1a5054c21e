"""The first minute of a visit: each task tab offers only models it can run, opens with results already there,
says in plain words what the model did with a long or unanswerable input, and marks results a failed run left."""

from __future__ import annotations

import dataclasses
import time

import pytest

from rpln_app import handlers as handlers_module
from rpln_app.arrivals import Arrivals
from rpln_app.handlers import Handlers, import_engine
from rpln_app.notes import FailedRuns, failed_run_notice, qa_notices
from rpln_app.pickers import model_facts, picker_choices, token_limit_note, wrong_head_message
from rpln_app.registry import ModelRegistry
from rpln_app.settings import from_environment
from rpln_app.trace_store import TraceRecord
from rpln_app.ui.task_tabs import EXAMPLES, FILL_MASK_TOP_K
from rpln_core import answer, load_model
from rpln_core.catalog import HUB_PRESETS, bundled_models
from rpln_core.errors import RplnError

ALL_MODELS = bundled_models() + HUB_PRESETS
SPAN = "violin: bowed stringed instrument that is the highest member of the violin family. "


@pytest.fixture(scope="module")
def handlers(one_torch_thread):
    import_engine()
    return Handlers(ModelRegistry(bundled_models(), public=False))


def rows(table) -> tuple[list[str], list[list]]:
    """Headers and rows of a table output (a pandas frame, or Gradio's {headers, data})."""
    if isinstance(table, dict):
        return table["headers"], table["data"]
    return list(table.columns), table.values.tolist()


def names(task: str, models: list[str] = ALL_MODELS) -> list[str]:
    return [name for _, name in picker_choices(models, task)]


# --- pickers fit the tab


def test_each_tabs_picker_lists_only_the_models_with_its_head_bundled_first():
    assert names("classification") == ["preln-mini-sentiment"]
    assert names("qa") == ["preln-mini-qa"]
    fill_mask = names("fill-mask")
    assert fill_mask[:2] == ["postln-mini", "preln-mini"]  # bundled, then the Hub presets (pre-training heads)
    assert fill_mask[2:] == HUB_PRESETS


def test_picker_labels_say_where_a_model_comes_from_and_its_size():
    labels = dict((name, label) for label, name in picker_choices(ALL_MODELS, "fill-mask"))
    assert labels["preln-mini"] == "preln-mini · bundled, 5.4M parameters, 4 layers"
    assert labels["FacebookAI/roberta-base"] == "FacebookAI/roberta-base · Hub, 125M parameters, 12 layers, ~0.5 GB"


def test_a_model_whose_head_shows_only_once_loaded_is_offered_everywhere_after_the_known_ones():
    models = ["some-org/unknown-model", "preln-mini-qa"]
    assert names("qa", models) == ["preln-mini-qa", "some-org/unknown-model"]
    assert names("fill-mask", models) == ["some-org/unknown-model"]


def test_a_checkpoint_directorys_head_is_read_from_its_config(checkpoint_dir):
    assert model_facts(str(checkpoint_dir("pre-ln", "qa"))).head == "qa"
    assert model_facts(str(checkpoint_dir("post-ln", "classification"))).head == "classification"
    assert model_facts(str(checkpoint_dir("pre-ln", "mlm"))).head == "fill-mask"


def test_a_model_with_another_head_is_refused_by_naming_its_tab_before_any_weight_is_read():
    def no_loading(name):
        raise AssertionError(f"{name} was loaded")

    registry = ModelRegistry(bundled_models(), public=False, loader=no_loading)
    with pytest.raises(RplnError, match=r"^'preln-mini-qa' is a question-answering model: use the Question answering "
                                        r"tab\.$"):
        registry.for_task("preln-mini-qa", "fill-mask")
    with pytest.raises(RplnError, match=r"^'preln-mini' is a fill-mask \(masked-LM\) model: use the /fill_mask end"):
        registry.for_task("preln-mini", "classification", api=True)
    assert wrong_head_message("x", "base", "qa") == (
        "'x' is a bare-encoder (no task head) model; the Question answering tab needs a question-answering model.")


def test_picking_a_model_with_another_head_keeps_the_previous_one(handlers):
    assert handlers.pick_model("preln-mini-sentiment", "preln-mini", "fill-mask") == ("preln-mini", "preln-mini")
    assert handlers.pick_model("postln-mini", "preln-mini", "fill-mask") == ("postln-mini", "postln-mini")


def test_a_tab_without_its_listed_default_starts_on_a_model_with_its_head():
    settings = from_environment([], {"RPLN_MODELS": "preln-mini,preln-mini-qa,preln-mini-sentiment"})
    assert settings.defaults["qa"] == "preln-mini-qa"
    settings = from_environment([], {"RPLN_MODELS": "postln-mini,preln-mini-qa"})
    assert settings.defaults["qa"] == "preln-mini-qa" and settings.defaults["fill-mask"] == "postln-mini"


# --- the token limit by the text box


def test_the_text_box_says_how_many_tokens_a_short_model_reads():
    assert token_limit_note("preln-mini", "fill-mask") == (
        "preln-mini reads at most 128 tokens (about 90 words): keep every <mask> within them.")
    assert "a longer text is cut to its first 128" in token_limit_note("preln-mini-sentiment", "classification")
    assert "read in overlapping windows" in token_limit_note("preln-mini-qa", "qa")
    assert token_limit_note("FacebookAI/roberta-base", "fill-mask") is None  # reads and learned 512
    assert "trained on 128-token sequences" in token_limit_note("andreasmadsen/efficient_mlm_m0.40", "fill-mask")


# --- results on arrival


def test_first_results_are_computed_once_and_served_to_every_visitor(handlers):
    calls = []

    def first_run():
        calls.append(1)
        return handlers.fill_mask("preln-mini", EXAMPLES["fill-mask"][0][0], FILL_MASK_TOP_K)

    arrivals = Arrivals(handlers)
    serve = arrivals.add("fill-mask", first_run, 0)
    first = serve()
    started = time.perf_counter()
    second = serve()
    assert time.perf_counter() - started < 0.05 and len(calls) == 1
    assert [id(value) for value in first] == [id(value) for value in second]
    headers, data = rows(first[1])
    assert headers[:3] == ["mask", "rank", "token"] and len(data) == FILL_MASK_TOP_K
    record = first[-1]
    assert isinstance(record, TraceRecord) and record.key in handlers.traces


def test_a_visitors_run_keeps_the_shared_first_trace_for_the_other_visitors(handlers):
    arrivals = Arrivals(handlers)
    record = arrivals.add("fill-mask", lambda: handlers.fill_mask("preln-mini", "The <mask>.", 3), 0)()[-1]
    mine = handlers.fill_mask("preln-mini", "A <mask>.", 3, record)[-1]  # this visitor's next run
    assert record.key in handlers.traces and mine.key in handlers.traces
    handlers.fill_mask("preln-mini", "A <mask> again.", 3, mine)
    assert mine.key not in handlers.traces  # a visitor's own earlier run still makes way


def test_first_results_files_outlive_the_export_folders_pruning(handlers, tmp_path, monkeypatch):
    from pathlib import Path

    from rpln_app import arrivals as arrivals_module

    monkeypatch.setattr(arrivals_module, "KEPT_ROOT", tmp_path / "kept")
    outputs = Arrivals(handlers).add("fill-mask", lambda: handlers.fill_mask("preln-mini", "The <mask>.", 3), 0)()
    model_view = next(value for value in outputs if isinstance(value, str) and value.endswith(".png"))
    assert Path(model_view).is_file() and tmp_path in Path(model_view).parents


def test_first_results_that_fail_say_so_and_are_tried_again(handlers):
    attempts = []

    def failing():
        attempts.append(1)
        raise RplnError("The model is away.")

    serve = Arrivals(handlers).add("qa", failing, 4)
    notice, *rest = serve()
    assert "was not run: The model is away. Press the button to try again." in notice and len(rest) == 3
    serve()
    assert len(attempts) == 2


def test_a_starting_model_that_needs_a_download_is_not_fetched_for_the_first_results(handlers):
    def run():
        raise AssertionError("the example ran")

    notice, *rest = Arrivals(handlers).add("fill-mask", run, 3, "some-org/not-downloaded")()
    assert notice == ("The example was not run: some\\-org/not\\-downloaded is not downloaded yet. Press the button to "
                      "download and run it.")


# --- a failed run marks what stays on screen


def test_a_failed_run_says_why_and_whose_results_stay_on_screen():
    record = TraceRecord("k", "fill-mask", "preln-mini", {"text": "The president spoke to the <mask>.", "top_k": 5})
    assert failed_run_notice("A mask lies beyond the first 128 tokens.", record) == [
        "A mask lies beyond the first 128 tokens.",
        "The results below are still from the previous run (model preln-mini on \u201cThe president spoke to the "
        "<mask>.\u201d).",
    ]
    assert failed_run_notice("No text.", None) == ["No text."]


def test_the_failure_message_reaches_the_notice_of_that_session_and_tab_only(handlers):
    class Request:
        session_hash = "visitor-1"

    too_long = "word " * 200 + "<mask>."
    with pytest.raises(RplnError, match="beyond the first 128 tokens"):
        handlers.fill_mask("preln-mini", too_long, 5, None, Request())
    assert handlers.failures.take("visitor-2", "fill-mask") is None
    record = TraceRecord("k", "fill-mask", "preln-mini", {"text": "The <mask> sat.", "top_k": 5})
    shown = handlers.run_failed("fill-mask", record, Request())
    assert shown.startswith("**Not run:** A mask lies beyond the first 128 tokens")
    assert shown.endswith("*The results below are still from the previous run \\(model preln\\-mini on "
                          "\u201cThe &lt;mask&gt; sat.\u201d\\).*")
    assert handlers.run_failed("fill-mask", None, Request()) == "**Not run:** the message at the top right says why."


def test_failure_messages_waiting_for_a_notice_are_bounded():
    failures = FailedRuns(kept=2)
    for session in "abc":
        failures.note(session, "qa", session)
    assert failures.take("a", "qa") is None and failures.take("c", "qa") == "c"


# --- the API: each endpoint with only its text, the rest as the page starts


def test_every_endpoint_answers_with_only_its_text_arguments(app_server):
    from gradio_client import Client

    client = Client(app_server.url, verbose=False)
    assert len(client.predict(text="The <mask> sat on the mat.", api_name="/fill_mask")["predictions"]) == 5
    labels = client.predict(text="A gripping film.", api_name="/classify")["labels"]
    assert {row["label"] for row in labels} == {"positive", "negative"}
    answers = client.predict(question="What is a violin?", context=SPAN, api_name="/answer")["answers"]
    assert answers[0]["answer"].startswith("bowed stringed instrument")
    both = client.predict(text="The <mask> sat on the mat.", api_name="/compare")
    assert both["left"]["residual"]["norms"] and both["right"]["residual"]["norms"]


# --- plain words


def test_a_long_context_gets_one_plain_sentence_about_windows_and_no_setting_names():
    loaded = load_model("preln-mini-qa")
    result = answer(loaded, "What is a violin?", SPAN * 8, top_k=3)
    result = dataclasses.replace(result, notices=result.notices + [
        "max_seq_len lowered from 384 to 128, the model's limit.",
        "doc_stride lowered from 128 to 117: the question leaves 118 context tokens per window."])
    notices = qa_notices(result, "preln-mini-qa", impossible=False)
    assert notices == [f"This model reads at most 128 tokens at once: the context was read in {result.windows} "
                       f"overlapping windows, and the views show window {result.window + 1}, which holds the best "
                       "answer."]
    assert qa_notices(answer(loaded, "What is a violin?", SPAN, top_k=3), "preln-mini-qa", impossible=False) == []


def test_allowing_no_answer_says_the_bundled_qa_model_never_abstains_only_when_it_is_asked():
    loaded = load_model("preln-mini-qa")
    unanswerable = ("Who won the war?", "Bananas are yellow fruit.")
    asked = answer(loaded, *unanswerable, top_k=3, handle_impossible_answer=True)
    assert asked.answers[0].start_token >= 0  # what the model does: it points at a span anyway
    (note,) = qa_notices(asked, "preln-mini-qa", impossible=True)
    assert note.startswith("'No answer' was allowed, but it scored 'no answer' below")
    assert "preln-mini-qa was trained only on questions whose answer is in the context: it never abstains." in note
    assert qa_notices(answer(loaded, *unanswerable, top_k=3), "preln-mini-qa", impossible=False) == []


def test_a_bare_space_prediction_shows_as_a_sign_not_an_empty_cell(handlers, monkeypatch):
    engine = handlers_module.fill_mask

    def predicting_a_space(loaded, text, **kwargs):
        result = engine(loaded, text, **kwargs)
        result.predictions[0][0] = dataclasses.replace(result.predictions[0][0], token_str=" ")
        return result

    monkeypatch.setattr(handlers_module, "fill_mask", predicting_a_space)
    table = handlers.fill_mask("preln-mini", "The <mask> sat.", 3)[1]
    assert rows(table)[1][0][2] == "␣"
