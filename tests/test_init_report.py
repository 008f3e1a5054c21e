"""The "Gradients at initialisation" experiment: one call validates, measures both architectures, and exports;
its figures draw one line per architecture next to Xiong et al.'s references.

Models are 64 wide and at most 4 layers deep, so the whole file runs in a couple of seconds.
"""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from rpln_core.errors import RplnError
from rpln_core.init_experiments import gradients_at_init, residual_norms_at_init
from rpln_core.init_std import matched_init_std
from rpln_core.init_report import ARCHITECTURES, ROW_COLUMNS, run_init_experiment
from viz.init_figures import depth_sweep_figure, layer_gradients_figure, residual_init_figure, value_axis
from viz.palette import ARCH_COLORS

WIDTH, DEPTH, SWEEP = 64, 3, (4, 2)


@pytest.fixture(scope="module")
def exp():
    return run_init_experiment(DEPTH, width=WIDTH, seed=1, sweep_depths=SWEEP)


def test_default_init_std_is_the_one_matched_to_the_width(exp):
    assert exp.init_std == matched_init_std(WIDTH)
    assert all(exp.gradients[arch].init_std == matched_init_std(WIDTH) for arch in ARCHITECTURES)


def test_sweep_includes_the_chosen_depth_once_in_ascending_order(exp):
    assert exp.sweep_depths == (2, 3, 4)
    for arch in ARCHITECTURES:
        assert [result.depth for result in exp.sweeps[arch]] == [2, 3, 4]
        # The chosen depth's per-layer chart and its sweep point come from the same model.
        assert exp.sweeps[arch][1].last_layer_grad_norm == exp.gradients[arch].layer_grad_norms[-1]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_numbers_are_those_of_the_core_experiments_called_directly(exp, arch):
    settings = dict(width=WIDTH, init_std=matched_init_std(WIDTH), seed=1)
    assert exp.gradients[arch] == gradients_at_init(arch, DEPTH, **settings)
    assert exp.residuals[arch] == residual_norms_at_init(arch, DEPTH, **settings)


def test_same_settings_again_reuse_the_cached_results(exp):
    again = run_init_experiment(DEPTH, width=WIDTH, seed=1, sweep_depths=SWEEP)
    assert all(again.gradients[arch] is exp.gradients[arch] for arch in ARCHITECTURES)


def test_whole_floats_from_sliders_are_accepted_as_ints():
    exp = run_init_experiment(2.0, width=64.0, sweep_depths=())
    assert (exp.depth, exp.width, exp.sweep_depths) == (2, 64, (2,))
    assert isinstance(exp.depth, int) and isinstance(exp.width, int)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=0), "Depth must be a whole number from 1 to 24"),
        (dict(depth=25), "Depth must be a whole number from 1 to 24"),
        (dict(depth=2.5), "Depth must be a whole number"),
        (dict(depth=True), "Depth must be a whole number"),
        (dict(depth="3"), "Depth must be a whole number"),
        (dict(depth=3, width=96), "Width must be one of 64, 128, 256"),
        (dict(depth=3, width=512), "Width must be a whole number from 64 to 256"),
        (dict(depth=3, init_std=0.0), "Init std must be above 0 and at most 0.5"),
        (dict(depth=3, init_std=-0.02), "Init std must be above 0"),
        (dict(depth=3, init_std=0.6), "at most 0.5"),
        (dict(depth=3, init_std=math.nan), "Init std must be above 0"),
        (dict(depth=3, seed=-1), "Seed must be a whole number from 0"),
        (dict(depth=3, sweep_depths=(3, 48)), "Each sweep depth must be a whole number from 1 to 24"),
    ],
)
def test_bad_settings_are_refused_with_a_message_that_names_the_valid_range(kwargs, message):
    with pytest.raises(RplnError, match=message):
        run_init_experiment(**kwargs)


def test_a_bad_init_std_message_offers_the_matched_one():
    with pytest.raises(RplnError, match=f"{matched_init_std(128):.4g}"):
        run_init_experiment(3, width=128, init_std=1.0)


def test_rows_are_one_per_architecture_and_stream_point_then_per_sweep_depth(exp):
    rows = exp.to_rows()
    per_layer = [row for row in rows if row["section"] == "per_layer"]
    sweep = [row for row in rows if row["section"] == "depth_sweep"]
    assert len(per_layer) == len(ARCHITECTURES) * (DEPTH + 1)  # the embedding output is point 0
    assert len(sweep) == len(ARCHITECTURES) * len(exp.sweep_depths)
    assert len(rows) == len(per_layer) + len(sweep)
    assert all(tuple(row) == ROW_COLUMNS for row in rows)

    pre = [row for row in per_layer if row["architecture"] == "pre-ln"]
    assert pre[0]["grad_norm"] is None and pre[0]["grad_parameter"] is None
    assert pre[-1]["grad_parameter"] == f"encoder.layer.{DEPTH - 1}.output.dense.weight"
    assert [row["grad_norm"] for row in pre[1:]] == exp.gradients["pre-ln"].layer_grad_norms
    assert [row["mean_resid_norm"] for row in pre] == exp.residuals["pre-ln"].mean_norms
    same_model = next(row for row in sweep if row["architecture"] == "pre-ln" and row["model_depth"] == DEPTH)
    assert same_model["grad_norm"] == pre[-1]["grad_norm"]

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    assert len(buffer.getvalue().splitlines()) == len(rows) + 1


def test_dict_is_strict_json_with_the_parameters_and_every_result(exp):
    document = json.loads(json.dumps(exp.to_dict(), allow_nan=False))
    assert document["parameters"] == dict(
        depth=DEPTH, width=WIDTH, heads=4, init_std=matched_init_std(WIDTH), seed=1, sweep_depths=[2, 3, 4]
    )
    for arch in ARCHITECTURES:
        result = document["architectures"][arch]
        assert len(result["gradients"]["layer_grad_norms"]) == DEPTH
        assert len(result["residual_norms"]["mean_norms"]) == DEPTH + 1
        assert [point["depth"] for point in result["depth_sweep"]] == [2, 3, 4]


def test_layer_figure_has_one_line_per_architecture_in_its_colour_over_layers_0_to_l_minus_1(exp):
    fig = layer_gradients_figure(exp)
    assert [trace.name for trace in fig.data] == ["pre-LN", "post-LN"]
    assert [trace.line.color for trace in fig.data] == [ARCH_COLORS[arch] for arch in ARCHITECTURES]
    assert list(fig.data[0].x) == list(range(DEPTH))  # blocks.0 … blocks.L-1, as everywhere else


def test_depth_figure_is_log_log_with_a_one_over_root_l_reference_through_pre_lns_first_point(exp):
    fig = depth_sweep_figure(exp)
    assert len(fig.data) == len(ARCHITECTURES) + 1
    assert fig.layout.xaxis.type == fig.layout.yaxis.type == "log"
    pre, reference = fig.data[0], fig.data[-1]
    assert reference.line.dash == "dash"
    assert reference.y[0] == pre.y[0]
    scaled = [y * math.sqrt(depth) for depth, y in zip(reference.x, reference.y)]
    assert scaled == pytest.approx([scaled[0]] * len(scaled), rel=1e-3)  # sig4 rounds to 4 digits


def test_residual_figure_draws_lemma_2_as_a_pre_ln_band_and_a_post_ln_level_under_both_lines(exp):
    fig = residual_init_figure(exp)
    band, level, *measured = fig.data
    assert band.fill == "toself" and len(band.x) == 2 * (DEPTH + 1)
    assert list(level.y) == pytest.approx([math.sqrt(1.5 * WIDTH)] * (DEPTH + 1), rel=1e-3)  # √(3d/2)
    assert [trace.name for trace in measured] == ["pre-LN", "post-LN"]
    assert list(measured[0].x) == list(range(DEPTH + 1))


def test_value_axes_turn_logarithmic_only_past_a_tenfold_span():
    assert value_axis([1.0, 9.0])["type"] == "linear"
    assert value_axis([0.1, 1.0, 2.0])["type"] == "log"
