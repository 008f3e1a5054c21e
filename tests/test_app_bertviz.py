"""bertviz's views in the app's inside-the-model panel, and downloads that stand alone: called in-process, as the
server calls the handlers, on the bundled models of each task tab."""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest

pytest.importorskip("bertviz", reason="bertviz is not installed (pip install bertviz==1.4.1)")

from rpln_app import inside  # noqa: E402
from rpln_app.handlers import Handlers  # noqa: E402
from rpln_app.keys import DRAWN_ON_OPEN, INSIDE_KEYS  # noqa: E402
from rpln_app.registry import ModelRegistry  # noqa: E402
from rpln_app.trace_store import TraceRecord, trace_nbytes  # noqa: E402
from rpln_core import fill_mask  # noqa: E402
from rpln_core.catalog import bundled_models  # noqa: E402
from viz import bertviz_views, export  # noqa: E402

HOSTILE = "<img src=x onerror=alert(1)> </script>"

# Each task tab's run on the bundled model: (task, handler name, arguments after the model). Classification with a
# second text and QA (question, context) have two segments, so their views get bertviz's sentence-pair filters.
RUNS = {
    "fill-mask": ("preln-mini", "fill_mask", ["The cat sat on the <mask>.", 3]),
    "classification": ("preln-mini-sentiment", "classify", ["A gripping film.", "A dull one."]),
    "qa": ("preln-mini-qa", "answer", ["What is a violin?", "A violin is a bowed instrument.", 2, False]),
}
# The panel's values start after the task outputs (their count per tab) and the two attention sliders.
TASK_OUTPUTS = {"fill-mask": 3, "classification": 3, "qa": 4}


@pytest.fixture(scope="module")
def handlers(one_torch_thread, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setattr(inside, "EXPORT_ROOT", tmp_path_factory.mktemp("exports"))
    monkeypatch_module.setattr(inside, "EXPORTS_KEPT", 10_000)  # the runs' downloads stay for the tests that read them
    return Handlers(ModelRegistry(bundled_models(), public=True))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def run(handlers, task: str, *, text: str | None = None) -> tuple[dict, TraceRecord]:
    """A task tab's run: the panel's values by key, and the session's record."""
    model, method, arguments = RUNS[task]
    if text is not None:
        arguments = [text, *arguments[1:]]
    outputs = getattr(handlers, method)(model, *arguments)
    panel = outputs[TASK_OUTPUTS[task] + 2 : -1]
    assert len(panel) == len(INSIDE_KEYS)
    return dict(zip(INSIDE_KEYS, panel)), outputs[-1]


@pytest.fixture(scope="module")
def runs(handlers):
    return {task: run(handlers, task) for task in RUNS}


def srcdoc(iframe: str) -> str:
    """The page an iframe_html holds, as the browser reads it."""
    return html.unescape(re.search(r'srcdoc="([^"]*)"', iframe).group(1))


# --- the views


@pytest.mark.parametrize("task", RUNS)
def test_a_run_sets_bertvizs_pickers_on_the_head_view_and_leaves_its_page_to_the_open_tab(runs, task):
    values, _ = runs[task]
    assert values["bertviz_view"].value == "head"
    assert (values["bertviz_layer"].visible, values["bertviz_head"].visible) == (True, False)  # every head fits
    assert values["bertviz"] == inside.message_html(inside.BERTVIZ_ON_OPEN) and "<iframe" not in values["bertviz"]
    assert values["bertviz_download"].visible is False


@pytest.mark.parametrize("task", RUNS)
def test_after_a_run_bertviz_draws_the_head_view_with_its_download_only_if_its_tab_is_open(handlers, runs, task):
    _, record = runs[task]
    assert handlers.bertviz_if_open(record, "attention", "head", 0, 0) == (gr.skip(),) * 4  # nothing drawn or sent
    page, download, layer, head = handlers.bertviz_if_open(record, "bertviz", "head", 0, 0)
    assert page.startswith('<iframe sandbox="allow-scripts"') and "<title>head view" in srcdoc(page)
    assert f'src="{inside.ASSET_URL}/d3-5.7.0/d3.min.js"' in srcdoc(page)  # the libraries come from the app, once
    assert Path(download.value["path"]).name.endswith("-head-view.html")


def head_view(handlers, runs, task: str) -> str:
    """The page of the head view the open bertviz tab shows after `task`'s run."""
    return srcdoc(handlers.bertviz_if_open(runs[task][1], "bertviz", "head", 0, 0)[0])


@pytest.mark.parametrize("task", RUNS)
@pytest.mark.parametrize("view", ["head", "model", "neuron"])
def test_every_view_draws_from_each_tabs_stored_trace_and_downloads_standalone(handlers, runs, task, view):
    _, record = runs[task]
    page, download, layer, head = handlers.bertviz_view(record, view, 1, 2)
    shown = srcdoc(page)
    assert f"<title>{view} view · {record.model}</title>" in shown
    pickers = {"head": (True, False), "model": (False, False), "neuron": (True, True)}  # the head view: every head fits
    assert (layer.visible, head.visible) == pickers[view]
    assert (layer.value, head.value) == (1, 2)
    saved = Path(download.value["path"]).read_text()
    assert '<script src="' not in saved and "d3" in saved  # libraries inlined: it draws on its own
    assert re.search(r"https?://", saved.split("</head>")[0]) is None  # its CSP allows no other origin


def test_the_neuron_view_starts_on_the_chosen_layer_and_head(handlers, runs):
    _, record = runs["fill-mask"]
    page = srcdoc(handlers.bertviz_view(record, "neuron", 2, 3)[0])
    data = json.loads(re.search(r'id="rpln-bertviz-data">(.*?)</script>', page).group(1))
    assert data["params"]["head"] == 3 and data["layer_labels"][data["params"]["layer"]] == 2
    assert set(data["packed"]) == {"attention", "queries", "keys"}


def test_a_head_view_that_holds_some_heads_offers_the_head_picker_and_centres_on_its_head(handlers, runs,
                                                                                            monkeypatch):
    _, record = runs["fill-mask"]
    tokens = len(handlers.traces.get(record.key).tokens)
    monkeypatch.setattr(bertviz_views, "HEAD_VIEW_MAX_LINES", 2 * tokens**2)  # two of preln-mini's four heads
    page, _, layer, head = handlers.bertviz_view(record, "head", 1, 3)
    data = json.loads(re.search(r'id="rpln-bertviz-data">(.*?)</script>', srcdoc(page)).group(1))
    assert data["params"]["include_heads"] == [2, 3] and (layer.visible, head.visible) == (True, True)
    assert "Showing heads 2, 3 of 4" in srcdoc(page)


@pytest.mark.parametrize("task", ["classification", "qa"])
def test_two_segments_get_bertvizs_sentence_pair_filters(handlers, runs, task):
    assert "Sentence A -> Sentence B" in head_view(handlers, runs, task)


def test_one_text_gets_no_pair_filter(handlers, runs):
    assert "Sentence A -> Sentence B" not in head_view(handlers, runs, "fill-mask")


def test_the_task_runs_keep_queries_and_keys_and_the_store_counts_them(handlers, runs):
    _, record = runs["fill-mask"]
    trace = handlers.traces.get(record.key)
    assert trace.queries is not None and trace.keys is not None
    assert trace.queries.shape == (trace.num_layers, trace.num_heads, len(trace.tokens), trace.queries.shape[-1])
    without = fill_mask(handlers.registry.get("preln-mini"), **record.inputs).trace
    assert trace_nbytes(trace) - trace_nbytes(without) == trace.queries.nbytes + trace.keys.nbytes


def test_a_trace_without_queries_and_keys_says_so_instead_of_a_neuron_view(handlers, runs, tmp_path):
    trace = fill_mask(handlers.registry.get("preln-mini"), "The cat sat on the <mask>.").trace
    page, download = inside.bertviz_values(trace, "neuron", 0, 0, tmp_path)
    assert download is None and "<iframe" not in page and "queries and keys" in page


def test_a_bertviz_view_that_does_not_exist_is_refused(handlers, runs):
    from rpln_core.errors import RplnError

    with pytest.raises(RplnError, match="no bertviz view"):
        handlers.bertviz_view(runs["fill-mask"][1], "<b>x</b>", 0, 0)


# --- downloads that stand alone


def export_paths(handlers, record) -> dict[str, Path]:
    """The run's statistics downloads, as the Export tab writes them when opened, by what follows the stem:
    "trace.json", "about.csv", "result.csv", …"""
    return {Path(p).name.rsplit("-", 1)[1]: Path(p) for p in handlers.exports(record)}


@pytest.mark.parametrize("task", RUNS)
def test_a_run_writes_no_downloads_until_the_export_tab_is_open(handlers, runs, task):
    values, record = runs[task]
    assert values["exports"] is None
    assert handlers.exports_if_open(record, "bertviz") == gr.skip()
    assert sorted(Path(p).suffix for p in handlers.exports_if_open(record, "export")) == [".csv"] * 5 + [".json"]


@pytest.mark.parametrize("task", RUNS)
def test_the_json_export_holds_input_settings_result_versions_and_time(handlers, runs, task):
    values, record = runs[task]
    document = json.loads(export_paths(handlers, record)["trace.json"].read_text())
    texts = {name: value for name, value in record.inputs.items() if isinstance(value, str)}
    assert document["task"] == task and document["model"] == record.model
    assert document["input"] == texts
    assert {name: value for name, value in record.inputs.items() if name not in texts}.items() <= \
        document["settings"].items()
    assert set(document["versions"]) >= {"preln-explorer", "transformers", "torch"}
    assert all(document["versions"][name] not in ("", "unknown") for name in ("transformers", "torch"))
    assert pd.Timestamp(document["exported_at"]).tzinfo is not None
    assert list(document["tables"]) == ["result", "layers", "layernorms", "tokens"]
    assert len(document["tables"]["result"]) > 0


def test_the_csv_exports_carry_the_run_too(handlers, runs):
    values, record = runs["qa"]
    paths = export_paths(handlers, record)
    with paths["about.csv"].open(newline="") as handle:
        about = {row["field"]: row["value"] for row in csv.DictReader(handle)}
    assert about["input.question"] == record.inputs["question"] and about["input.context"] == record.inputs["context"]
    assert about["settings.top_k"] == "2" and about["versions.torch"] and about["exported_at"]
    result = pd.read_csv(paths["result.csv"])
    assert list(result.columns[:5]) == ["rank", "answer", "score", "start", "end"]


def test_export_names_carry_model_input_and_time_and_never_repeat(handlers):
    (_, first_record), (_, second_record) = run(handlers, "fill-mask"), run(handlers, "fill-mask")
    names = [Path(p).name for record in (first_record, second_record) for p in handlers.exports(record)]
    names += [Path(handlers.bertviz_view(record, "head", 0, 0)[1].value["path"]).name
              for record in (first_record, second_record)]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"preln-mini_the-cat-sat-on-the-mask_\d{8}T\d{6}\.\d{3}Z-[a-z-]+\.(json|csv|html)", n)
               for n in names)


def test_the_charts_download_as_png_named_for_chart_and_input(runs):
    values, _ = runs["fill-mask"]
    spec = json.loads(values["entropy"].plot)
    assert spec["config"]["toImageButtonOptions"] == {
        "format": "png", "filename": "preln-mini_entropy_the-cat-sat-on-the", "scale": 2}
    assert "data" in spec and "layout" in spec


@pytest.mark.parametrize("task", RUNS)
def test_a_run_leaves_the_other_tabs_views_to_be_drawn_when_each_is_opened(handlers, runs, task):
    values, record = runs[task]
    for tab, keys in DRAWN_ON_OPEN.items():
        assert all(values[key] is None for key in keys if key not in ("ln_choice", "ln_table"))
        assert values["ln_table"].empty and values["ln_choice"].choices == []
        closed = handlers.tab_views_if_open(record, "attention", tab)
        opened = handlers.tab_views_if_open(record, tab, tab)
        if len(keys) == 1:  # Gradio takes one output's value alone
            closed, opened = [closed], [opened]
        assert closed == [gr.skip()] * len(keys)
        drawn = dict(zip(keys, opened))
        assert all(value is not None for value in drawn.values())
    layernorms = dict(zip(DRAWN_ON_OPEN["layernorm"], handlers.tab_views(record, "layernorm")))
    trace = handlers.traces.get(record.key)
    assert layernorms["ln_choice"].choices == [(stats.name, stats.name) for stats in trace.layernorms]
    assert json.loads(layernorms["gamma_beta"].plot)["config"]["toImageButtonOptions"]["filename"].startswith(
        f"{record.model}_gamma-beta_")  # the PNG named as the run's other charts


@pytest.mark.parametrize("open_tab", ["attention", "bertviz", "export", *DRAWN_ON_OPEN])
def test_after_a_run_one_event_draws_the_open_tab_and_skips_the_others(handlers, runs, open_tab):
    _, record = runs["fill-mask"]
    values = handlers.open_tab_after_run(record, open_tab, "head", 0, 0)
    owners = ["bertviz"] * 4 + ["export"] + [tab for tab, keys in DRAWN_ON_OPEN.items() for _ in keys]
    assert len(values) == len(owners)
    drawn = {owner for owner, value in zip(owners, values) if not (isinstance(value, dict) and value == gr.skip())}
    assert drawn == (set() if open_tab == "attention" else {open_tab})


def test_the_layernorm_table_is_the_exported_frame_rounded_for_reading(runs, handlers):
    values, record = runs["fill-mask"]
    table = dict(zip(DRAWN_ON_OPEN["layernorm"], handlers.tab_views(record, "layernorm")))["ln_table"]
    exported = export.trace_tables(handlers.traces.get(record.key))["layernorms"]
    assert isinstance(table, pd.DataFrame) and list(table.columns) == list(exported.columns)
    assert table["scale"].tolist() == [float(f"{v:.4g}") for v in exported["scale"]]
    assert table["layer"].isna().tolist() == exported["layer"].isna().tolist()  # embed.ln sits outside the layers


# --- hostile input


@pytest.fixture(scope="module")
def hostile_runs(handlers):
    return {task: run(handlers, task, text=f"{HOSTILE} <mask>" if task == "fill-mask" else HOSTILE)
            for task in RUNS}


@pytest.mark.parametrize("task", RUNS)
@pytest.mark.parametrize("view", ["head", "model", "neuron"])
def test_hostile_input_stays_text_in_every_view_and_its_download(handlers, hostile_runs, task, view):
    _, record = hostile_runs[task]
    iframe, download, _, _ = handlers.bertviz_view(record, view, 0, 0)
    assert iframe.count("<") == iframe.count(">") == 2  # <iframe …></iframe>: the page is all in srcdoc
    for page in (srcdoc(iframe), without_libraries(Path(download.value["path"]).read_text())):
        assert "<img" not in page and page.count("</script>") == page.count("<script")
        assert "\\u003c" in page  # the tokens' "<" is there, as JSON escapes it


def without_libraries(page: str) -> str:
    """A download without the vendored libraries inlined in it (jQuery's source spells tags in strings)."""
    for library in bertviz_views.libraries():
        page = page.replace(bertviz_views._library_source(library.path), "")
    return page


@pytest.mark.parametrize("task", RUNS)
def test_hostile_input_stays_text_in_every_export(handlers, hostile_runs, task):
    values, record = hostile_runs[task]
    paths = export_paths(handlers, record)
    document = json.loads(paths["trace.json"].read_text())
    first_text = next(value for value in record.inputs.values() if isinstance(value, str))
    assert first_text in document["input"].values()  # data in a string, as typed
    with paths["about.csv"].open(newline="") as handle:
        assert first_text in [row["value"] for row in csv.DictReader(handle)]
    for path in paths.values():
        assert "<img" not in path.name and "/" not in path.name


def test_the_task_result_charts_download_as_png_named_for_chart_and_input(handlers):
    """The tabs' own charts too, not only the panel's: a Scores PNG is not plotly's `newplot.png`."""
    outputs = handlers.fill_mask("preln-mini", "The cat sat on the <mask>.", 3)
    spec = json.loads(outputs[2].plot)
    assert spec["config"]["toImageButtonOptions"]["filename"] == "preln-mini_scores_the-cat-sat-on-the"
