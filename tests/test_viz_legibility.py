"""The figures say what their captions say: norms drawn from zero so flat reads flat, log axes labelled with
whole numbers, notes clear of legends, legible lens cells, a labelled model view that marks the chosen head,
whitespace tokens shown, and one name for each layer and stream point."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import pytest

import rpln_core
from rpln_core import compare as comparing
from rpln_core import fill_mask
from rpln_core.ablation import outlier_ablation
from rpln_core.curves import load_pair
from rpln_core.init_report import run_init_experiment
from viz import attention, compare, curves, init_figures, lens, residual, tasks
from viz.ablation import ablation_figure
from viz.attention import GAP, GAP_COLOUR, MARK_COLOUR, Mosaic
from viz.layout import log_tick_values, value_axis
from viz.names import LAYER_AXIS
from viz.text import token_label, visible_token

from test_viz import every_figure, strings_in  # noqa: E402

TEXT = "The capital of France is <mask>."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundled():
    """The bundled twins on one text: the models a student meets first."""
    pre, post = rpln_core.load_model("preln-mini"), rpln_core.load_model("postln-mini")
    comparison = comparing.compare(pre, post, TEXT)
    return {"pre": fill_mask(pre, TEXT), "post": fill_mask(post, TEXT), "comparison": comparison}


@pytest.fixture(scope="module")
def experiment():
    return run_init_experiment(3, width=64, seed=1, sweep_depths=(2, 4))


@pytest.fixture(scope="module")
def figures(bundled, experiment, loaded) -> dict[str, go.Figure]:
    """Every plotly figure of viz/, drawn from real results, keyed by the function that drew it."""
    comparison = bundled["comparison"]
    pre_curve, post_curve = load_pair("no warm-up, lr 2e-3")
    ablation = outlier_ablation(loaded("pre-ln"), "The cat sat on the <mask>.", dims=[1, 2], controls=2)

    return {
        **every_figure(bundled["pre"]),  # the trace figures, as test_viz draws them
        "fill_mask_figure": tasks.fill_mask_figure(bundled["pre"]),
        "residual_comparison_figure": compare.residual_comparison_figure(comparison),
        "layernorm_scale_figure": compare.layernorm_scale_figure(comparison),
        "entropy_comparison_figure": compare.entropy_comparison_figure(comparison),
        "layer_gradients_figure": init_figures.layer_gradients_figure(experiment),
        "depth_sweep_figure": init_figures.depth_sweep_figure(experiment),
        "residual_init_figure": init_figures.residual_init_figure(experiment),
        "loss_curves_figure": curves.loss_curves_figure(pre_curve, post_curve),
        "gradient_curves_figure": curves.gradient_curves_figure(pre_curve, post_curve, 0),
        "ablation_figure": ablation_figure([ablation]),
    }


def axes(figure: go.Figure) -> dict[str, go.layout.XAxis | go.layout.YAxis]:
    return {key: figure.layout[key] for key in figure.layout if re.fullmatch(r"[xy]axis\d*", key)}


# --- norms start at zero ---------------------------------------------------------------------------


def test_post_ln_residual_norm_is_drawn_from_zero_so_its_flat_line_reads_flat(bundled):
    trace = bundled["post"].trace
    assert trace.architecture == "post-ln"
    figure = residual.norm_figure(trace)
    norms = np.array(figure.data[0].y)
    assert figure.layout.yaxis.type == "linear" and figure.layout.yaxis.rangemode == "tozero"
    # From zero, the axis is at least as tall as the largest norm: post-LN's wobble is a few percent of it.
    assert (norms.max() - norms.min()) / norms.max() < 0.1


@pytest.mark.parametrize(
    "name", ["norm_figure", "sublayer_figure", "residual_comparison_figure", "residual_init_figure"]
)
def test_every_norm_chart_starts_at_zero_unless_its_values_span_more_than_tenfold(figures, name):
    figure = figures[name]
    values = np.concatenate([np.asarray(line.y, dtype=float) for line in figure.data if line.y is not None])
    values = values[np.isfinite(values) & (values > 0)]
    if values.max() / values.min() > 10:
        assert figure.layout.yaxis.type == "log"
    else:
        assert figure.layout.yaxis.type == "linear" and figure.layout.yaxis.rangemode == "tozero"
    assert figure.layout.yaxis.range is None  # nothing overrides the zero


def test_the_bundled_twins_comparison_draws_both_norms_from_zero(bundled):
    figure = compare.residual_comparison_figure(bundled["comparison"])
    assert figure.layout.yaxis.rangemode == "tozero" and figure.layout.yaxis.type == "linear"


def test_a_log_norm_axis_is_only_chosen_past_a_tenfold_span_so_it_spans_a_decade_or_more():
    assert value_axis([15.9, 16.1, 16.5])["rangemode"] == "tozero"
    assert value_axis([1.0, 9.9])["type"] == "linear"
    wide = value_axis([0.5, 2.0, 60.0])
    assert wide["type"] == "log" and "rangemode" not in wide


# --- log axes: readable labels only -----------------------------------------------------------------


def tick_number(text: str) -> float:
    """The number a tick label states: "0.5", "20", "10<sup>−6</sup>", "2×10<sup>−6</sup>"."""
    power = re.fullmatch(r"(?:([\d.]+)×)?10<sup>([−-]?\d+)</sup>", text)
    if power:
        return float(power[1] or 1) * 10.0 ** int(power[2].replace("−", "-"))
    return float(text)


def assert_labels_state_their_values(values, texts, what: str) -> None:
    assert values is not None and texts is not None, f"{what}: plotly would pick (and abbreviate) the labels"
    assert len(values) == len(texts) > 0
    for value, text in zip(values, texts):
        assert tick_number(text) == pytest.approx(value, rel=1e-6), f"{what}: {text!r} labels {value}"


def test_no_log_axis_in_viz_is_left_to_plotlys_minor_digit_labels(figures):
    logs = []
    for name, figure in figures.items():
        for key, axis in axes(figure).items():
            if axis.type == "log":
                logs.append(f"{name}.{key}")
                assert_labels_state_their_values(axis.tickvals, axis.ticktext, f"{name}.{key}")
    # The charts that need a log axis on these results have one (the norm charts, from zero, do not).
    assert {"massive_figure.yaxis", "layernorm_scale_figure.yaxis", "depth_sweep_figure.xaxis",
            "depth_sweep_figure.yaxis", "gradient_curves_figure.yaxis"} <= set(logs)


def test_log_axes_label_round_numbers_within_the_data(figures):
    figure = figures["layernorm_scale_figure"]
    scales = np.concatenate([np.asarray(line.y, dtype=float) for line in figure.data])
    shown = [v for v in figure.layout.yaxis.tickvals if scales.min() <= v <= scales.max()]
    assert len(shown) >= 2
    assert all(float(f"{v:.1g}") == v for v in shown)  # 0.5, 1, 2, 5, 10: one significant digit


@pytest.mark.parametrize("low, high", [(0.58, 6.0), (1e-9, 3e9), (14.0, 27.0), (15.9, 16.5), (0.9, 2.1)])
def test_log_ticks_give_two_to_eight_labels_inside_any_span(low, high):
    inside = [v for v in log_tick_values(low, high) if low <= v <= high]
    assert 2 <= len(inside) <= 8


@pytest.mark.parametrize("name", ["scale_heatmap", "abs_input_heatmap", "lens_figure"])
def test_log_colour_bars_label_plain_numbers(figures, name):
    (heatmap,) = [trace for trace in figures[name].data if isinstance(trace, go.Heatmap)]
    bar = heatmap.colorbar
    assert_labels_state_their_values([10.0**v for v in bar.tickvals], bar.ticktext, name)


# --- notes clear of legends ---------------------------------------------------------------------------


def test_the_massive_activations_note_and_legend_cannot_overlap(figures):
    figure = figures["massive_figure"]
    (note,) = figure.layout.annotations
    assert figure.layout.legend.orientation == "h" and figure.layout.legend.y < 0  # below the plot area
    assert note.xref in (None, "x") and note.yref in (None, "y")  # on the data, inside the plot area
    low, high = figure.layout.yaxis.range  # log10 units
    assert low <= note.y and note.y + 0.2 * (high - low) <= high  # room above the point for the note


# --- the logit lens -----------------------------------------------------------------------------------


def luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_lens_cells_hold_readable_text_on_every_shade(figures):
    (cells,) = figures["lens_figure"].data
    assert cells.textfont.size >= 11
    colours = [colour for _, colour in cells.colorscale]
    assert all(contrast(cells.textfont.color, colour) >= 4.5 for colour in colours), colours  # WCAG AA
    assert luminance(colours[0]) < 0.95  # the palest cell is tinted, not page-white


def test_lens_rows_are_named_as_the_trace_names_the_streams(bundled):
    trace = bundled["pre"].trace
    (cells,) = lens.lens_figure(trace).data
    assert trace.logit_lens.streams[1] == "layer 1"  # the lens counts layer outputs from 1 …
    assert list(cells.y) == ["embed"] + [f"resid_post[{layer}]" for layer in range(trace.num_layers)]  # … we do not


# --- the model view -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pre_trace(bundled):
    return bundled["pre"].trace


def test_model_view_clicks_at_every_thumbnails_centre_name_that_thumbnail(pre_trace):
    layers, heads = pre_trace.num_layers, pre_trace.num_heads
    mosaic = Mosaic(layers, heads, attention.thumbnail_size(layers, heads))
    assert attention.model_view(pre_trace).size == mosaic.size
    for layer in range(layers):
        for head in range(heads):
            left, top, right, bottom = mosaic.box(layer, head)
            assert attention.model_view_cell((left + right) // 2, (top + bottom) // 2, pre_trace) == (layer, head)


def test_model_view_numbers_every_layer_and_head_at_its_row_and_column(pre_trace):
    layers, heads = pre_trace.num_layers, pre_trace.num_heads
    image = np.asarray(attention.model_view(pre_trace)).mean(axis=-1)
    mosaic = Mosaic(layers, heads, attention.thumbnail_size(layers, heads))
    for head in range(heads):
        left, top, right, _ = mosaic.box(0, head)
        assert image[top - mosaic.label_size - 6 : top - GAP, left:right].min() < 128, f"head {head} unlabelled"
    for layer in range(layers):
        left, top, _, bottom = mosaic.box(layer, 0)
        assert image[top:bottom, left - 2 * mosaic.label_size : left - GAP].min() < 128, f"layer {layer} unlabelled"


def test_model_view_frames_the_selected_head_and_nothing_else(pre_trace):
    plain = np.asarray(attention.model_view(pre_trace)).astype(int)
    marked = np.asarray(attention.model_view(pre_trace, selected=(2, 1))).astype(int)
    mosaic = Mosaic(pre_trace.num_layers, pre_trace.num_heads, attention.thumbnail_size(4, 4))
    left, top, right, bottom = mosaic.box(2, 1)
    ring = np.zeros(plain.shape[:2], bool)
    ring[top - GAP : bottom + GAP, left - GAP : right + GAP] = True
    ring[top + 1 : bottom - 1, left + 1 : right - 1] = False
    assert (marked[ring] == MARK_COLOUR).all()
    changed = (plain != marked).any(axis=-1)
    changed[ring] = False
    changed[: mosaic.top] = changed[:, : mosaic.left] = False  # the chosen numbers turn orange too
    assert not changed.any()  # every other thumbnail and gap as before
    other_left, other_top, other_right, _ = mosaic.box(0, 0)
    assert (marked[other_top - GAP : other_top, other_left:other_right] == GAP_COLOUR).all()


def test_model_view_refuses_a_selected_head_that_does_not_exist(pre_trace):
    with pytest.raises(ValueError, match="Head 4"):
        attention.model_view(pre_trace, selected=(0, 4))


def test_model_view_labels_grow_with_a_large_mosaic_shown_at_page_height():
    small, large = Mosaic(4, 4, 100), Mosaic(24, 16, 32)
    assert small.label_size == attention.LABEL_SIZE
    shown = large.label_size * attention.SHOWN_HEIGHT / large.size[1]  # the page scales the image to fit
    assert shown >= 10


# --- whitespace tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token, shown", [(" ", "␣"), ("\n", "⏎"), ("", "␣"), ("  ", "␣␣"), (" \n", "␣⏎"), ("\t", "⇥"), (" Paris", " Paris")]
)
def test_whitespace_only_tokens_are_spelled_visibly(token, shown):
    assert visible_token(token) == shown


def test_a_bare_space_prediction_is_a_visible_bar_label(bundled):
    result = bundled["pre"]
    spaced = [replace(p, token_str=s) for p, s in zip(result.predictions[0], [" ", "\n", " Paris", "", "x"])]
    figure = tasks.fill_mask_figure(replace(result, predictions=[spaced]))
    assert list(figure.data[0].customdata) == ["␣", "⏎", " Paris", "␣", "x"]
    assert all(label.strip() for label in figure.layout.yaxis.ticktext)


def test_a_bare_space_in_the_logit_lens_is_a_visible_cell(bundled):
    trace = bundled["pre"].trace
    top = [[[" ", "\n"] + position[2:] for position in stream] for stream in trace.logit_lens.top_strings]
    (cells,) = lens.lens_figure(replace(trace, logit_lens=replace(trace.logit_lens, top_strings=top))).data
    assert all(row[:2] == ["␣", "⏎"] for row in cells.text)


def test_a_bare_space_in_the_comparison_table_is_visible(bundled):
    comparison = bundled["comparison"]
    left = comparison.models[0]
    spaced = [[replace(p, token_str=" ") for p in row] for row in left.fill_mask.predictions]
    left = replace(left, fill_mask=replace(left.fill_mask, predictions=spaced))
    rows = compare.fill_mask_rows(replace(comparison, models=(left, comparison.models[1])))
    assert {row["left token"] for row in rows} == {"␣"}
    assert token_label("<") == "&lt;"  # the figure's version is escaped; the table's is not


# --- one name per thing -------------------------------------------------------------------------------


def test_no_figure_names_a_layer_the_model_does_not_have(figures, bundled, experiment):
    layers = {"layer_gradients_figure": experiment.depth, "residual_init_figure": experiment.depth,
              "depth_sweep_figure": max(experiment.sweep_depths)}
    for name, figure in figures.items():
        count = layers.get(name, bundled["pre"].trace.num_layers)
        for text in strings_in(figure):
            for pattern in (r"blocks\.(\d+)", r"resid_(?:pre|mid|post)\[(\d+)\]", r"\blayer (\d+)"):
                for number in re.findall(pattern, text):
                    assert int(number) < count, f"{name}: {text!r} (layers count from 0)"


@pytest.mark.parametrize(
    "name, key",
    [("entropy_heatmap", "yaxis"), ("sinks_figure", "xaxis"), ("sinks_figure", "yaxis2"), ("sublayer_figure", "xaxis"),
     ("entropy_comparison_figure", "yaxis"), ("layer_gradients_figure", "xaxis")],
)
def test_every_layer_axis_is_titled_and_ticked_alike(figures, bundled, experiment, name, key):
    axis = figures[name].layout[key]
    count = experiment.depth if name == "layer_gradients_figure" else bundled["pre"].trace.num_layers
    assert axis.title.text == LAYER_AXIS
    assert list(axis.ticktext) == [str(layer) for layer in range(count)]
    assert list(axis.tickvals) == list(range(count))


STREAM_CHARTS = ["norm_figure", "massive_figure", "residual_comparison_figure", "residual_init_figure"]


@pytest.mark.parametrize("name", STREAM_CHARTS)
def test_every_stream_axis_is_ticked_embed_then_each_layers_output(figures, bundled, experiment, name):
    axis = figures[name].layout.xaxis
    count = experiment.depth if name == "residual_init_figure" else bundled["pre"].trace.num_layers
    assert list(axis.ticktext) == ["embed"] + [str(layer) for layer in range(count)]
    assert "resid_post[l]" in axis.title.text
    hovers = next(line for line in figures[name].data if line.customdata is not None).customdata
    assert "resid_post[0]" in str(hovers[1]) and "embed" in str(hovers[0])
