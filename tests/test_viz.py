"""The figures of viz/: each shows exactly what the trace holds, escapes what users and tokenizers write,
and stays small enough to send to a browser."""

from __future__ import annotations

import ast
import csv
import html
import io
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from rpln_core import analysis, answer, classify, fill_mask
from rpln_core.load import random_model
from viz import attention, captions, export, layernorm, lens, residual, tasks
from viz.attention import GAP, Mosaic
from viz.text import plot_label, token_label, token_labels

EVIL_IMG = "<img src=x onerror=alert(1)>"
EVIL_SCRIPT = "<script>alert(2)</script>"
ESCAPED_IMG = "&lt;img src=x onerror=alert(1)&gt;"
ESCAPED_SCRIPT = "&lt;script&gt;alert(2)&lt;/script&gt;"
QA_CONTEXT = "Paris is the capital of France, and Berlin is the capital of Germany."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mlm(loaded):
    return fill_mask(loaded("pre-ln"), "The cat sat on the <mask> and the dog sat on the <mask>.")


@pytest.fixture(scope="module")
def post_ln(loaded):
    return fill_mask(loaded("post-ln"), "The cat sat on the <mask>.")


@pytest.fixture(scope="module")
def classified(loaded):
    return classify(loaded("pre-ln", "classification"), "A good movie makes you laugh.")


@pytest.fixture(scope="module")
def qa(loaded):
    return answer(loaded("pre-ln", "qa"), "What is the capital of Germany?", QA_CONTEXT, top_k=3)


def every_figure(result) -> dict[str, go.Figure]:
    """Each trace figure drawn from `result.trace`, keyed by the function that drew it."""
    trace = result.trace
    figures = {
        "head_view": attention.head_view(trace, trace.num_layers - 1, trace.num_heads - 1),
        "entropy_heatmap": attention.entropy_heatmap(trace),
        "rollout_heatmap": attention.rollout_heatmap(trace),
        "sinks_figure": attention.sinks_figure(trace),
        "scale_heatmap": layernorm.scale_heatmap(trace),
        "gamma_beta_figure": layernorm.gamma_beta_figure(trace, "blocks.0.ln1"),
        "abs_input_heatmap": layernorm.abs_input_heatmap(trace),
        "norm_figure": residual.norm_figure(trace),
        "sublayer_figure": residual.sublayer_figure(trace),
        "massive_figure": residual.massive_figure(trace),
    }
    if trace.logit_lens is not None:
        figures["lens_figure"] = lens.lens_figure(trace)
    return figures


def strings_in(figure: go.Figure) -> list[str]:
    """Every string in the figure's JSON, decoded: what plotly.js will actually render."""
    found = []

    def walk(value):
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(figure.to_json()))
    return found


def heatmap(figure: go.Figure) -> go.Heatmap:
    return next(trace for trace in figure.data if isinstance(trace, go.Heatmap))


def as_array(values) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)


# --- text -------------------------------------------------------------------------------------------


def test_plot_labels_show_tags_as_text():
    assert plot_label(EVIL_IMG) == ESCAPED_IMG
    assert plot_label("<s> & </s>") == "&lt;s&gt; &amp; &lt;/s&gt;"


def test_token_labels_are_unique_even_when_a_token_repeats(mlm):
    strings = mlm.trace.tokens.strings
    labels = token_labels(mlm.trace)
    assert len(set(strings)) < len(strings)  # "the" and "sat" come twice
    assert len(set(labels)) == len(labels) == len(strings)
    assert labels[0] == "0·&lt;s&gt;"


# --- attention --------------------------------------------------------------------------------------


def test_head_view_is_the_heads_attention_query_by_key(mlm):
    trace = mlm.trace
    figure = attention.head_view(trace, 1, 2)
    z = np.array(heatmap(figure).z)
    tokens = len(trace.tokens)
    assert z.shape == (tokens, tokens)
    np.testing.assert_allclose(z, trace.attentions[1, 2].float().numpy(), atol=1e-3)
    assert list(heatmap(figure).y) == token_labels(trace)


def test_head_view_refuses_a_head_that_does_not_exist(mlm):
    with pytest.raises(ValueError, match="Head 4"):
        attention.head_view(mlm.trace, 0, mlm.trace.num_heads)


@pytest.mark.parametrize("cell", [32, 8])  # fewer tokens than pixels (upscaled), then more (pooled)
def test_model_view_is_a_mosaic_of_layers_by_heads(mlm, cell):
    trace = mlm.trace
    image = np.asarray(attention.model_view(trace, cell=cell))
    mosaic = Mosaic(trace.num_layers, trace.num_heads, cell)
    assert image.shape[1::-1] == mosaic.size
    assert mosaic.size == (mosaic.left + GAP + trace.num_heads * (cell + GAP),
                           mosaic.top + GAP + trace.num_layers * (cell + GAP))
    left, top, right, bottom = mosaic.box(trace.num_layers - 1, trace.num_heads - 1)
    assert (right + GAP, bottom + GAP) == mosaic.size  # the last thumbnail, then one gap, ends the image
    assert (image[top - GAP : top, left:right] == attention.GAP_COLOUR).all()  # a grey gap frames each one


def test_a_click_on_a_thumbnail_names_its_layer_and_head_and_a_gap_names_none(mlm):
    trace, cell = mlm.trace, 32
    mosaic = Mosaic(trace.num_layers, trace.num_heads, cell)
    for layer in range(trace.num_layers):
        for head in range(trace.num_heads):
            left, top, right, bottom = mosaic.box(layer, head)
            assert attention.model_view_cell((left + right) // 2, (top + bottom) // 2, trace, cell) == (layer, head)
            assert attention.model_view_cell(left, top, trace, cell) == (layer, head)  # corners too
            assert attention.model_view_cell(right - 1, bottom - 1, trace, cell) == (layer, head)
    left, top, right, bottom = mosaic.box(0, 0)
    assert attention.model_view_cell(right, top + 5, trace, cell) is None  # the gap right of head 0
    assert attention.model_view_cell(left + 5, bottom, (trace.num_layers, trace.num_heads), cell) is None
    assert attention.model_view_cell(left - 1, top + 5, trace, cell) is None  # the gap left of head 0
    assert attention.model_view_cell(5, top + 5, trace, cell) is None  # the layer numbers
    assert attention.model_view_cell(left + 5, 5, trace, cell) is None  # the head numbers
    assert attention.model_view_cell(mosaic.size[0] + 3, top + 5, trace, cell) is None
    assert attention.model_view_cell(-1, 5, trace, cell) is None


def test_model_view_draws_a_focused_head_dark_and_a_uniform_head_pale(mlm):
    trace = mlm.trace
    tokens = len(trace.tokens)
    attentions = torch.full_like(trace.attentions, 1.0 / tokens)
    attentions[0, 0] = torch.eye(tokens)  # layer 0, head 0 attends to itself only
    image = np.asarray(attention.model_view(replace(trace, attentions=attentions), cell=64), dtype=float)
    mosaic = Mosaic(trace.num_layers, trace.num_heads, 64)
    left, top, right, bottom = mosaic.box(0, 0)
    darkness = 255 - image[top:bottom, left:right].mean(axis=-1)
    diagonal = darkness[np.arange(64), np.arange(64)].mean()
    off_diagonal = darkness[np.arange(64), (np.arange(64) + 32) % 64].mean()
    left, top, right, bottom = mosaic.box(0, 1)
    uniform_head = (255 - image[top:bottom, left:right].mean(axis=-1)).mean()
    assert diagonal > 150 and off_diagonal < 20
    assert uniform_head < diagonal / 2


def test_entropy_heatmap_is_layers_by_heads_in_nats(mlm):
    z = np.array(heatmap(attention.entropy_heatmap(mlm.trace)).z)
    np.testing.assert_allclose(z, analysis.attention_entropy(mlm.trace).numpy(), rtol=1e-3)


def test_rollout_heatmap_shows_the_last_layer_unless_told_otherwise(mlm):
    rollout = analysis.attention_rollout(mlm.trace)
    last = np.array(heatmap(attention.rollout_heatmap(mlm.trace)).z)
    first = np.array(heatmap(attention.rollout_heatmap(mlm.trace, layer=0)).z)
    np.testing.assert_allclose(last, rollout[-1].numpy(), atol=1e-3)
    np.testing.assert_allclose(first, rollout[0].numpy(), atol=1e-3)


def test_sinks_figure_shows_each_layers_share_on_bos_eos_and_punctuation(mlm):
    sinks = analysis.attention_sinks(mlm.trace)
    figure = attention.sinks_figure(mlm.trace)
    lines = {line.name: np.array(line.y) for line in figure.data if isinstance(line, go.Scatter)}
    for name, shares in (("&lt;s&gt;", sinks.bos), ("&lt;/s&gt;", sinks.eos), ("punctuation", sinks.punctuation)):
        np.testing.assert_allclose(lines[name], shares.mean(dim=-1).numpy(), atol=1e-3)
    np.testing.assert_allclose(np.array(heatmap(figure).z), sinks.bos.numpy(), atol=1e-3)


# --- LayerNorm --------------------------------------------------------------------------------------


def test_scale_heatmap_is_layernorms_by_tokens_of_log_one_over_sigma(mlm):
    trace = mlm.trace
    z = as_array(heatmap(layernorm.scale_heatmap(trace)).z)
    assert z.shape == (len(trace.layernorms), len(trace.tokens))
    assert list(heatmap(layernorm.scale_heatmap(trace)).y) == [stats.name for stats in trace.layernorms]
    blocks_1_ln2 = [stats.name for stats in trace.layernorms].index("blocks.1.ln2")
    np.testing.assert_allclose(z[blocks_1_ln2], trace.layernorm("blocks.1.ln2").scale.log10().numpy(), atol=1e-3)
    head = trace.layernorm("lm_head.ln")  # reads the masked positions only: the rest of its row is empty
    assert np.isfinite(z[-1]).nonzero()[0].tolist() == head.positions == mlm.mask_positions


def test_stats_table_has_a_row_per_layernorm_with_token_means(mlm):
    trace = mlm.trace
    table = layernorm.stats_table(trace)
    assert table["name"].tolist() == [stats.name for stats in trace.layernorms]
    row, stats = table.iloc[3], trace.layernorms[3]
    assert set(table.columns) >= {"name", "module", "layer", "placement", "positions", "mean", "std", "scale", "max_abs"}
    assert row["positions"] == len(stats.positions) and row["layer"] == stats.layer
    for key in ("mean", "std", "scale", "max_abs"):
        assert row[key] == pytest.approx(float(getattr(stats, key).float().mean()), rel=1e-6)
    assert table["layer"].dtype == "Int64" and table["layer"].isna().tolist() == [
        stats.layer is None for stats in trace.layernorms]  # embed.ln and lm_head.ln sit outside the layers


def test_gamma_beta_figure_marks_the_outlier_dimensions(mlm):
    trace = mlm.trace
    index = [stats.name for stats in trace.layernorms].index("blocks.1.ln1")
    weight = trace.layernorms[index].weight.clone()
    weight[7] = 40.0  # one dimension far outside the others, as in BERT Busters
    layernorms = list(trace.layernorms)
    layernorms[index] = replace(layernorms[index], weight=weight)
    figure = layernorm.gamma_beta_figure(replace(trace, layernorms=layernorms), "blocks.1.ln1")
    gamma, gamma_outliers, beta, beta_outliers = figure.data
    assert len(gamma.y) == len(beta.y) == trace.embed.shape[-1]
    assert list(gamma_outliers.x) == [7] and gamma_outliers.y[0] == 40.0
    assert list(beta_outliers.x) == []  # β is untouched: nothing flagged


def test_abs_input_heatmap_is_layernorms_by_hidden_dimensions(mlm):
    trace = mlm.trace
    z = np.array(heatmap(layernorm.abs_input_heatmap(trace)).z)
    assert z.shape == (len(trace.layernorms), trace.embed.shape[-1])
    np.testing.assert_allclose(z[0], trace.layernorms[0].abs_mean_per_dim.log10().numpy(), atol=1e-3)


# --- residual stream --------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["mlm", "post_ln"])
def test_norm_figure_states_and_draws_the_fitted_growth_factor(which, request):
    trace = request.getfixturevalue(which).trace
    growth = analysis.residual_growth(trace)
    figure = residual.norm_figure(trace)
    means, fit = figure.data
    np.testing.assert_allclose(means.y, growth.resid_norm.numpy(), rtol=1e-3)
    stated = f"×{growth.growth_factor:.3f} per layer"
    assert stated in figure.layout.title.text and stated in fit.name
    np.testing.assert_allclose(np.array(fit.y[1:]) / np.array(fit.y[:-1]), growth.growth_factor, rtol=1e-3)
    assert figure.layout.yaxis.type == "linear" and figure.layout.yaxis.rangemode == "tozero"  # flat reads flat


def test_sublayer_figure_puts_each_branch_next_to_the_stream_it_is_added_to(mlm):
    growth = analysis.residual_growth(mlm.trace)
    lines = {line.name: np.array(line.y) for line in residual.sublayer_figure(mlm.trace).data}
    np.testing.assert_allclose(lines["‖attn_out[l]‖"], growth.attn_out_norm.numpy(), rtol=1e-3)
    np.testing.assert_allclose(lines["‖ffn_out[l]‖"], growth.ffn_out_norm.numpy(), rtol=1e-3)
    np.testing.assert_allclose(lines["‖resid_pre[l]‖"], growth.resid_norm[:-1].numpy(), rtol=1e-3)
    np.testing.assert_allclose(lines["‖resid_mid[l]‖"], analysis.token_mean(mlm.trace.resid_mid_norm), rtol=1e-3)


def test_massive_figure_shows_top_and_median_and_where_the_top_sits(mlm):
    massive = analysis.massive_activations(mlm.trace)
    top, median = residual.massive_figure(mlm.trace).data
    np.testing.assert_allclose(top.y, massive.top.numpy(), rtol=1e-3)
    np.testing.assert_allclose(median.y, massive.median.numpy(), rtol=1e-3)
    labels = token_labels(mlm.trace)
    assert [row[0] for row in top.customdata] == [labels[i] for i in massive.token.tolist()]
    assert [row[1] for row in top.customdata] == massive.dim.tolist()


# --- logit lens -------------------------------------------------------------------------------------


def test_lens_figure_is_streams_by_rank_at_the_chosen_mask(mlm):
    trace = mlm.trace
    figure = lens.lens_figure(trace, mask=1)
    cells = heatmap(figure)
    lens_data = trace.logit_lens
    assert list(cells.y) == ["embed"] + [f"resid_post[{layer}]" for layer in range(trace.num_layers)]
    assert len(lens_data.streams) == trace.num_layers + 1  # the lens's "embed", "layer 1" … "layer L"
    np.testing.assert_allclose(np.array(cells.customdata), lens_data.top_probs[:, 1].numpy(), rtol=1e-3)
    np.testing.assert_allclose(np.array(cells.z), lens_data.top_probs[:, 1].log10().numpy(), atol=1e-3)
    assert [row[0] for row in cells.text] == [token_label(stream[1][0]) for stream in lens_data.top_strings]


def test_there_is_no_lens_figure_without_a_lens(classified):
    assert classified.trace.logit_lens is None
    assert lens.lens_figure(classified.trace) is None


# --- task outputs -----------------------------------------------------------------------------------


def test_fill_mask_figure_has_a_bar_per_prediction_with_its_score(mlm):
    figure = tasks.fill_mask_figure(mlm, mask=1)
    bars = figure.data[0]
    np.testing.assert_allclose(bars.x, [p.score for p in mlm.predictions[1]], rtol=1e-3)
    assert len(figure.layout.yaxis.ticktext) == len(mlm.predictions[1])


def test_classification_figure_has_a_bar_per_label(classified):
    bars = tasks.classification_figure(classified).data[0]
    assert list(bars.customdata) == [label.label for label in classified.labels]
    np.testing.assert_allclose(bars.x, [label.score for label in classified.labels], rtol=1e-3)


def test_qa_logits_cover_the_context_tokens_only_and_shade_the_answer(qa):
    tokens = qa.trace.tokens
    context = [i for i, segment in enumerate(tokens.segments) if segment == 1 and not tokens.special[i]]
    start, end = tasks.qa_logits_figure(qa).data
    assert list(start.x) == list(end.x) == context
    np.testing.assert_allclose(start.y, [qa.start_logits[i] for i in context], atol=1e-3)
    (shade,) = tasks.qa_logits_figure(qa).layout.shapes
    best = qa.answers[0]
    assert (shade.x0, shade.x1) == (best.start_token - 0.5, best.end_token + 0.5)


def test_qa_highlight_marks_the_best_answer_at_its_character_offsets(qa):
    best = qa.answers[0]
    marked = tasks.qa_highlight_html(qa, QA_CONTEXT)
    assert f">{QA_CONTEXT[best.start:best.end]}</mark>" in marked
    assert marked.count("<mark") == 1


# --- escaping ---------------------------------------------------------------------------------------


def hostile(result, segment: int = 0):
    """The result with hostile text wherever the user or the tokenizer can put text.

    The first two tokens of `segment` read as the two hostile strings, and so does every lens top-1.
    """
    trace = result.trace
    strings = list(trace.tokens.strings)
    first, second = [i for i, s in enumerate(trace.tokens.segments) if s == segment][:2]
    strings[first], strings[second] = EVIL_IMG, EVIL_SCRIPT
    trace = replace(trace, tokens=replace(trace.tokens, strings=strings), model_name=EVIL_SCRIPT)
    if trace.logit_lens is not None:
        top = [[[EVIL_IMG] + position[1:] for position in stream] for stream in trace.logit_lens.top_strings]
        trace = replace(trace, logit_lens=replace(trace.logit_lens, top_strings=top))
    return replace(result, trace=trace)


def assert_escaped(figure: go.Figure, name: str) -> None:
    for text in strings_in(figure):
        assert "<img" not in text and "<script" not in text, f"{name} shows raw HTML: {text[:80]}"


def test_hostile_text_reaches_no_figure_unescaped(mlm, qa, classified):
    result = hostile(mlm)
    result = replace(result, predictions=[[replace(p, token_str=EVIL_IMG) for p in row] for row in result.predictions])
    figures = every_figure(result) | {"fill_mask_figure": tasks.fill_mask_figure(result)}
    qa_result = hostile(qa, segment=1)  # the logits are drawn over the context only
    figures |= {"qa_logits_figure": tasks.qa_logits_figure(qa_result)}
    labels = [replace(label, label=EVIL_SCRIPT) for label in classified.labels]
    figures |= {"classification_figure": tasks.classification_figure(replace(classified, labels=labels))}
    for name, figure in figures.items():
        assert_escaped(figure, name)
    shown = {name: "\n".join(strings_in(figure)) for name, figure in figures.items()}
    for name in ("head_view", "rollout_heatmap", "scale_heatmap", "qa_logits_figure"):
        assert ESCAPED_IMG in shown[name] and ESCAPED_SCRIPT in shown[name], name
    for name in ("lens_figure", "fill_mask_figure"):
        assert ESCAPED_IMG in shown[name], name
    assert ESCAPED_SCRIPT in shown["classification_figure"]


def test_hostile_text_typed_into_the_model_is_escaped_too(loaded):
    result = fill_mask(loaded("pre-ln"), f"The cat {EVIL_IMG} sat on the <mask> {EVIL_SCRIPT}.")
    for name, figure in every_figure(result).items():
        assert_escaped(figure, name)
        for text in strings_in(figure):
            assert "<s>" not in text, f"{name}: plotly would draw <s> as strike-through"


def test_qa_highlight_escapes_everything_around_and_inside_the_answer(loaded):
    context = f"{EVIL_SCRIPT} Paris is the capital of France, {EVIL_IMG} and Berlin is the capital of Germany."
    result = answer(loaded("pre-ln", "qa"), "What is the capital of Germany?", context)
    # Also put the answer on the hostile text itself, so the part inside <mark> must be escaped too.
    start = context.index(EVIL_IMG)
    on_hostile = replace(result, answers=[replace(result.answers[0], start=start, end=start + len(EVIL_IMG))])
    for shown in (tasks.qa_highlight_html(result, context), tasks.qa_highlight_html(on_hostile, context)):
        assert "<img" not in shown and "<script" not in shown
        assert shown.count("<mark") == 1
        # What the browser shows, tags removed, is the context exactly as typed.
        assert html.unescape(re.sub(r"<[^>]*>", "", shown)) == context
    assert f">{ESCAPED_IMG}</mark>" in tasks.qa_highlight_html(on_hostile, context)


# --- payload ----------------------------------------------------------------------------------------


def test_the_attention_section_of_a_24_layer_16_head_model_at_128_tokens_stays_under_5_mb(tokenizer):
    model = random_model(
        "pre-ln", "mlm", tokenizer, hidden_size=64, num_hidden_layers=24, num_attention_heads=16,
        max_position_embeddings=514,
    )
    text = "Paris is the capital of France, and Berlin is the capital of Germany. " * 6 + "The <mask>"
    while len(tokenizer(text)["input_ids"]) < 128:
        text += " the"
    trace = fill_mask(model, text).trace
    assert len(trace.tokens) == 128 and trace.attentions.shape[:2] == (24, 16)

    png = io.BytesIO()
    attention.model_view(trace).save(png, format="PNG")
    figures = [
        attention.head_view(trace, 23, 15),
        attention.entropy_heatmap(trace),
        attention.rollout_heatmap(trace),
        attention.sinks_figure(trace),
    ]
    total = png.tell() + sum(len(figure.to_json().encode()) for figure in figures)
    assert png.tell() < 500_000  # the mosaic of all 384 heads: a few hundred KB at most
    assert total < 5_000_000, f"{total / 1e6:.2f} MB"


# --- export -----------------------------------------------------------------------------------------


def test_exports_are_parseable_json_and_csv_with_the_tables_columns(mlm, tmp_path):
    trace = mlm.trace
    paths = export.write_exports(trace, tmp_path / "out")
    names = sorted(path.name for path in paths)
    assert names == sorted(f"{export.slug(trace.model_name)}-{t}" for t in ("trace.json", "layers.csv",
                                                                              "layernorms.csv", "tokens.csv"))
    assert all(path.parent == tmp_path / "out" and "/" not in path.name for path in paths)
    document = json.loads(next(p for p in paths if p.suffix == ".json").read_text(), parse_constant=pytest.fail)
    tables = export.trace_tables(trace)
    assert set(document["tables"]) == {"layers", "layernorms", "tokens"}
    for name, table in tables.items():
        with (tmp_path / "out" / f"{export.slug(trace.model_name)}-{name}.csv").open(newline="") as handle:
            read = list(csv.DictReader(handle))
        assert len(read) == len(table) == len(document["tables"][name])
        assert list(read[0]) == list(table.columns) == list(document["tables"][name][0])
    tokens = document["tables"]["tokens"]
    assert len(tokens) == len(trace.tokens)
    assert {"position", "token", "id", "start", "end", "special", "segment"} <= set(tokens[0])
    assert [f"resid_post_norm[{layer}]" for layer in range(trace.num_layers)] == [
        key for key in tokens[0] if key.startswith("resid_post_norm")
    ]
    assert tokens[1]["resid_post_norm[0]"] == float(trace.resid_post_norm[0, 1])
    assert tokens[0]["segment"] is None and tokens[1]["segment"] == 0  # <s> belongs to no segment


def test_exported_layer_numbers_stay_whole_and_missing_ones_empty(mlm, tmp_path):
    """embed.ln sits outside the layers: its layer is empty in CSV and null in JSON, the others read 0, 1, …"""
    paths = export.write_exports(mlm.trace, tmp_path)
    with next(p for p in paths if p.name.endswith("-layernorms.csv")).open(newline="") as handle:
        read = list(csv.DictReader(handle))
    assert read[0]["name"] == "embed.ln" and read[0]["layer"] == ""
    assert read[1]["name"] == "blocks.0.ln1" and read[1]["layer"] == "0"
    document = json.loads(paths[0].read_text())
    assert document["tables"]["layernorms"][0]["layer"] is None


def test_export_file_names_are_safe_whatever_the_model_is_called(mlm, tmp_path):
    trace = replace(mlm.trace, model_name="../../etc/<passwd> model")
    paths = export.write_exports(trace, tmp_path)
    assert all(path.parent == tmp_path for path in paths)
    assert paths[0].name == "etc-passwd-model-trace.json"


def test_infinite_statistics_are_written_as_null_not_as_invalid_json(tmp_path):
    rows = [{"massive_ratio": math.inf, "mean": 1.5, "layer": None}, {"massive_ratio": math.nan, "mean": 2, "layer": 0}]
    paths = export.write_tables({"rows": rows}, tmp_path, "x", {}, json_name="all")
    document = json.loads(paths[0].read_text(), parse_constant=pytest.fail)
    assert document["tables"]["rows"] == [
        {"massive_ratio": None, "mean": 1.5, "layer": None}, {"massive_ratio": None, "mean": 2, "layer": 0}
    ]
    # Rows of dicts are written as given (no whole number turns into 0.0); NaN and None are empty cells.
    assert paths[1].read_text().splitlines() == ["massive_ratio,mean,layer", "inf,1.5,", ",2,0"]


# --- captions and layering --------------------------------------------------------------------------


def test_every_figure_has_a_caption():
    drawn = {
        "head_view", "model_view", "entropy_heatmap", "rollout_heatmap", "sinks_figure", "scale_heatmap",
        "stats_table", "gamma_beta_figure", "abs_input_heatmap", "norm_figure", "sublayer_figure",
        "massive_figure", "lens_figure", "fill_mask_figure", "classification_figure", "qa_logits_figure",
        "qa_highlight_html", "layer_diagram", "residual_comparison_figure", "layernorm_scale_figure",
        "entropy_comparison_figure", "fill_mask_rows", "layer_gradients_figure", "depth_sweep_figure",
        "residual_init_figure", "loss_curves_figure", "gradient_curves_figure", "ablation_figure",
    }
    assert drawn <= set(captions.CAPTIONS)
    assert all(len(caption) > 40 for name, caption in captions.CAPTIONS.items() if name != "qa_highlight_html")


def test_viz_never_imports_gradio_nor_runs_a_model():
    for path in Path(attention.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any(name.split(".")[0] == "gradio" for name in imported), path.name
        assert not any(name.startswith(("rpln_core.load", "transformers")) for name in imported), path.name


def test_fill_mask_figure_for_every_mask_numbers_each_masks_candidates(mlm):
    figure = tasks.fill_mask_figure(mlm, mask=None)
    bars = figure.data[0]
    expected = [p.score for row in mlm.predictions for p in row]
    assert list(bars.x) == pytest.approx(expected, rel=1e-3)
    labels = list(bars.customdata)
    assert labels[0].startswith("1: ") and labels[-1].startswith(f"{len(mlm.predictions)}: ")


def test_small_models_get_larger_thumbnails_and_clicks_still_find_their_head(mlm):
    trace = mlm.trace
    image = attention.model_view(trace)  # default size: a 3 x 4 mosaic would be a stamp at 32 px
    cell = attention.thumbnail_size(trace.num_layers, trace.num_heads)
    assert cell > 32
    mosaic = Mosaic(trace.num_layers, trace.num_heads, cell)
    assert image.size == mosaic.size
    left, top, right, bottom = mosaic.box(2, 3)
    assert attention.model_view_cell((left + right) // 2, (top + bottom) // 2, trace) == (2, 3)


def test_ablation_figure_shows_each_models_three_conditions_with_whiskers_only_on_the_random_controls(loaded):
    from rpln_core.ablation import outlier_ablation
    from viz.ablation import ablation_figure, ablation_rows

    text = "The cat sat on the <mask>."
    results = [outlier_ablation(loaded(arch), text, dims=[1, 2], controls=3) for arch in ("pre-ln", "post-ln")]
    figure = ablation_figure(results)
    assert len(figure.data) == 4  # two models x (probability, KL)
    probability = figure.data[0]
    assert list(probability.x) == ["intact", "outlier dims off", "random dims off"]
    controls = [run.intact_top_probability[0] for run in results[0].controls]
    expected = [results[0].runs[0].intact_top_probability[0], results[0].runs[1].intact_top_probability[0],
                sum(controls) / 3]
    assert list(probability.y) == pytest.approx(expected, rel=1e-3)
    assert probability.error_y.array[:2] == (None, None)
    assert probability.error_y.array[2] == pytest.approx(max(controls) - expected[2], rel=1e-3, abs=1e-6)
    assert "dims 1, 2" in probability.name
    assert len(ablation_rows(results)) == 2 * 5
