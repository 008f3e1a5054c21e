"""Training curves: every bundled setting pairs a pre-LN and a post-LN log, a diverged run's inf/nan survives
loading yet never reaches the browser, and the figures stay small."""

from __future__ import annotations

import csv
import json
import math
import os
import time

import numpy as np
import pytest

from rpln_core import curves
from rpln_core.catalog import BUNDLED_DIR
from rpln_core.curves import RunSettings, downsample, load_pair, moving_average
from rpln_core.errors import RplnError
from viz.curves import MAX_POINTS, gradient_curves_figure, loss_curves_figure
from viz.palette import ARCH_COLORS

BUNDLED_LABELS = [
    "with warm-up (lr 5e-4)",
    "no warm-up, lr 5e-4",
    "no warm-up, lr 1e-3",
    "no warm-up, lr 2e-3",
    "no warm-up, lr 1e-2",
]
HEADER = ["step", "loss", "lr", "grad_norm_total", *(f"grad_norm_layer_{i}" for i in range(4)), "elapsed_s"]


def write_log(path, steps=1500, loss_overrides=None, grad_overrides=None, seed=0):
    """A log as scripts/train_mlm.py writes it, with chosen cells replaced (e.g. by inf or nan)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for step in range(1, steps + 1):
            loss = (loss_overrides or {}).get(step, 9.0 - 3.0 * step / steps + 0.1 * rng.standard_normal())
            grad = (grad_overrides or {}).get(step, float(10 ** rng.uniform(-3, 0)))
            writer.writerow([step, loss, 1e-2 * (1 - step / steps), 2 * grad, grad, grad, grad, grad, step * 0.1])
    return path


def finite_or_none(values) -> bool:
    return all(v is None or (isinstance(v, (int, float)) and math.isfinite(v)) for v in values)


def strict_json(fig) -> dict:
    """The figure's JSON, read by a parser that refuses NaN and Infinity (what a browser's JSON.parse does)."""

    def refuse(constant):
        raise AssertionError(f"figure JSON holds {constant}")

    return json.loads(fig.to_json(), parse_constant=refuse)


# ---------------------------------------------------------------- the bundled logs


def test_bundled_settings_are_the_main_twins_and_four_no_warmup_rates():
    assert [setting.label for setting in curves.available_runs()] == BUNDLED_LABELS


@pytest.mark.parametrize("label", BUNDLED_LABELS)
def test_each_bundled_setting_loads_a_pre_ln_and_a_post_ln_run_of_the_same_length(label):
    setting = curves.find_setting(label)
    pre, post = load_pair(setting)
    expected_steps = 6500 if setting.warmup else 2000  # models/README.md
    assert (pre.architecture, post.architecture) == ("pre-ln", "post-ln")
    for curve in (pre, post):
        assert curve.steps.tolist() == list(range(1, expected_steps + 1))
        assert curve.loss.shape == curve.lr_per_step.shape == curve.grad_norm_total.shape == (expected_steps,)
        assert curve.grad_norm_layers.shape == (4, expected_steps)
        assert (curve.warmup, curve.lr) == (setting.warmup, setting.lr)
        assert curve.setting == setting
        # The warm-up schedule climbs for 500 steps; step 501 is the first at the peak rate.
        assert curve.warmup_end == (501 if setting.warmup else None)
        assert curve.unigram_loss == json.loads((BUNDLED_DIR / "eval" / "preln.json").read_text())["unigram"]["loss"]


def test_fine_tuning_logs_are_not_offered_as_pretraining_settings():
    assert (BUNDLED_DIR / "curves" / "ft-qa.csv").is_file()
    assert not any(setting.key.startswith("ft") for setting in curves.available_runs())
    assert curves.parse_run_name("ft-qa") is None


def test_without_warmup_at_lr_2e_3_the_post_ln_first_layer_gradient_collapses_while_pre_ln_keeps_learning():
    pre, post = load_pair("no warm-up, lr 2e-3")
    after = pre.steps >= 100  # models/README.md: the post-LN run stalls within its first hundred steps
    pre_norms, post_norms = pre.grad_norm_layers[0][after], post.grad_norm_layers[0][after]
    assert post_norms.max() < 2e-3 < 5e-3 < pre_norms.min()
    assert np.median(post_norms) < 1e-4 * np.median(pre_norms)
    assert post.loss[-50:].mean() > 7.0 > 5.0 > pre.loss[-50:].mean()  # post-LN stuck near the unigram level


def test_the_app_can_ask_for_the_same_pair_on_every_request_without_rereading_it():
    first = load_pair("no warm-up, lr 2e-3")
    started = time.perf_counter()
    again = load_pair("no warm-up, lr 2e-3")
    assert again[0] is first[0] and again[1] is first[1]
    assert time.perf_counter() - started < 0.05
    with pytest.raises(ValueError):
        first[0].loss[0] = 0.0  # shared between requests, so read-only


def test_run_names_state_their_setting():
    assert curves.parse_run_name("preln") == (RunSettings("", True, 5e-4), "pre-ln")
    assert curves.parse_run_name("nowarmup-lr2e-3-postln") == (RunSettings("nowarmup-lr2e-3", False, 2e-3), "post-ln")
    assert curves.parse_run_name("warmup1000-preln") == (RunSettings("warmup1000", True, None), "pre-ln")
    assert RunSettings("nowarmup-lr2.5e-3", False, 2.5e-3).label == "no warm-up, lr 2.5e-3"
    assert RunSettings("nowarmup-lr1e-2", False, 1e-2).file_name("post-ln") == "nowarmup-lr1e-2-postln.csv"


# ---------------------------------------------------------------- series helpers


def test_moving_average_is_the_trailing_mean_of_the_last_window_steps():
    assert moving_average([1, 2, 3, 4, 5], 3).tolist() == [1.0, 1.5, 2.0, 3.0, 4.0]
    assert moving_average([1, 2, 3], 1).tolist() == [1.0, 2.0, 3.0]


def test_moving_average_skips_inf_and_nan_instead_of_spreading_them():
    smoothed = moving_average([1.0, math.inf, 3.0, math.nan, math.nan, math.nan], 2)
    assert smoothed[:4].tolist() == [1.0, 1.0, 3.0, 3.0]
    assert np.isnan(smoothed[4:]).all()  # no finite value in the window: a gap, not a made-up number


def test_moving_average_keeps_small_values_exact_after_a_huge_spike():
    # A running-sum implementation would return cancellation noise (or negatives) here.
    assert moving_average([5e9, 1e-4, 1e-4, 1e-4], 2)[-1] == pytest.approx(1e-4, rel=1e-12)


@pytest.mark.parametrize("length", [1, 999, 1000, 1001, 2000, 6500, 6501])
@pytest.mark.parametrize("max_points", [4, 7, 1000])
def test_downsample_stays_within_max_points_and_keeps_the_extremes(length, max_points):
    rng = np.random.default_rng(length)
    values = rng.standard_normal(length)
    values[length // 3] = 1e9  # a gradient explosion must not be strided away
    steps = np.arange(1, length + 1)
    kept_steps, kept = downsample(steps, values, max_points)
    if length <= max_points:
        assert np.array_equal(kept, values)
    assert len(kept) == len(kept_steps) <= max_points
    assert np.all(np.diff(kept_steps) > 0) and kept_steps[0] == 1 and kept_steps[-1] == length
    assert kept.max() == values.max() and kept.min() == values.min()
    assert np.array_equal(values[kept_steps - 1], kept)  # every kept point is a real (step, value) pair


def test_downsample_turns_a_diverged_stretch_into_a_gap():
    values = np.concatenate([np.ones(3000), np.full(3000, np.nan), [np.inf] * 500])
    steps, kept = downsample(np.arange(len(values)), values, 100)
    assert len(kept) <= 100 and np.isnan(kept).any() and not np.isinf(kept).any()


# ---------------------------------------------------------------- a diverged run


@pytest.fixture
def diverged(tmp_path):
    """A setting whose pre-LN log holds inf losses and nan gradients, and an eval file with the baseline."""
    directory = tmp_path / "curves"
    write_log(
        directory / "nowarmup-lr1e-2-preln.csv",
        loss_overrides={700: math.inf, 1499: math.nan, 1500: math.inf},
        grad_overrides={5: math.nan, 6: 0.0, 1500: math.inf},  # 0 cannot be drawn on a log axis either
    )
    write_log(directory / "nowarmup-lr1e-2-postln.csv", seed=1)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "preln.json").write_text(json.dumps({"unigram": {"loss": 7.25}}))
    return directory


def test_inf_and_nan_in_a_log_survive_loading_and_become_none_in_rows(diverged):
    (setting,) = curves.available_runs(diverged)
    pre, post = load_pair(setting, diverged)
    assert np.isinf(pre.loss[699]) and np.isnan(pre.loss[1498]) and np.isnan(pre.grad_norm_layers[0][4])
    assert pre.unigram_loss == 7.25
    rows = pre.to_rows()
    assert rows[699]["loss"] is None and rows[4]["grad_norm_layer_0"] is None and rows[0]["step"] == 1
    json.dumps(rows, allow_nan=False)  # strict JSON accepts the export


def test_figures_of_a_diverged_run_build_and_send_no_inf_or_nan(diverged):
    pre, post = load_pair("no warm-up, lr 1e-2", diverged)
    for fig in (loss_curves_figure(pre, post), *(gradient_curves_figure(pre, post, layer) for layer in (0, None))):
        data = strict_json(fig)["data"]
        for trace in data:
            assert finite_or_none(trace["y"]) and len(trace["y"]) <= MAX_POINTS
        marks = [trace for trace in data if trace["name"].startswith("pre-LN:")]
        assert len(marks) == 1 and marks[0]["mode"] == "markers"  # the inf/nan steps are marked, not silently dropped
    loss_marks = next(t for t in loss_curves_figure(pre, post).data if t.name == "pre-LN: loss was inf/nan")
    assert list(loss_marks.x) == [700, 1499, 1500] and list(loss_marks.customdata) == ["inf", "nan", "inf"]


def test_a_log_axis_never_gets_a_zero_gradient(diverged):
    pre, post = load_pair("no warm-up, lr 1e-2", diverged)
    for trace in gradient_curves_figure(pre, post, 0).data:
        assert all(v is None or v > 0 for v in trace.y)


# ---------------------------------------------------------------- errors


def test_a_missing_log_is_an_error_that_names_the_file(tmp_path):
    write_log(tmp_path / "nowarmup-lr1e-2-preln.csv")
    assert curves.available_runs(tmp_path) == []  # half a pair is not offered
    with pytest.raises(RplnError, match="nowarmup-lr1e-2-postln.csv is missing"):
        load_pair(RunSettings("nowarmup-lr1e-2", False, 1e-2), tmp_path)


def test_an_unknown_setting_is_an_error_that_lists_the_available_ones():
    with pytest.raises(RplnError, match="no warm-up, lr 2e-3"):
        load_pair("no warm-up, lr 3e-3")


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no rows"),
        ("step,loss,lr\n1,9.0,0.0\n", "lacks the column"),
        (",".join(HEADER) + "\n1,9.0,0.0,1,1,1,1,1,0.1\n2,oops,0.0,1,1,1,1,1,0.2\n", "Line 3 .* 'oops' in loss"),
        (",".join(HEADER) + "\n1,9.0,0.0,1,1,1,1\n", "Line 2 .* 7 values for 9 columns"),
    ],
)
def test_a_malformed_log_is_an_error_that_says_what_is_wrong(tmp_path, content, message):
    for name in ("preln.csv", "postln.csv"):
        (tmp_path / name).write_text(content)
    with pytest.raises(RplnError, match=message):
        load_pair(RunSettings("", True, 5e-4), tmp_path)


def test_a_rewritten_log_is_read_again(tmp_path):
    write_log(tmp_path / "preln.csv", steps=10)
    write_log(tmp_path / "postln.csv", steps=10)
    assert len(load_pair("with warm-up (lr 5e-4)", tmp_path)[0].steps) == 10
    write_log(tmp_path / "preln.csv", steps=20)
    later = time.time() + 5
    os.utime(tmp_path / "preln.csv", (later, later))  # a coarse file-system clock could hide the rewrite
    assert len(load_pair("with warm-up (lr 5e-4)", tmp_path)[0].steps) == 20


# ---------------------------------------------------------------- figures of the bundled runs


def test_loss_figure_draws_each_architecture_raw_and_averaged_in_its_own_colour():
    pre, post = load_pair("with warm-up (lr 5e-4)")
    fig = loss_curves_figure(pre, post, smooth=25)
    names = [trace.name for trace in fig.data]
    assert names == [
        "pre-LN, each step",
        "pre-LN (mean of 25 steps)",
        "post-LN, each step",
        "post-LN (mean of 25 steps)",
    ]
    assert [trace.line.color for trace in fig.data] == [ARCH_COLORS["pre-ln"]] * 2 + [ARCH_COLORS["post-ln"]] * 2
    assert all(len(trace.x) <= MAX_POINTS for trace in fig.data)
    assert "with warm-up (lr 5e-4)" in fig.layout.title.text
    # The 25-step average of the last 25 steps is exactly the mean of those logged losses.
    assert fig.data[1].y[-1] == pytest.approx(pre.loss[-25:].mean(), rel=1e-3)


def test_loss_figure_marks_the_unigram_baseline_and_the_end_of_warmup():
    pre, post = load_pair("with warm-up (lr 5e-4)")
    fig = loss_curves_figure(pre, post)
    texts = {annotation.text for annotation in fig.layout.annotations}
    assert {"unigram baseline", "end of warm-up"} <= texts
    baseline = next(s for s in fig.layout.shapes if s.y0 == s.y1)
    assert baseline.y0 == pre.unigram_loss and baseline.line.dash == "dot"
    assert [s.x0 for s in fig.layout.shapes if s.x0 == s.x1] == [501]


def test_without_warmup_there_is_no_warmup_line():
    fig = loss_curves_figure(*load_pair("no warm-up, lr 2e-3"))
    assert "end of warm-up" not in {annotation.text for annotation in fig.layout.annotations}
    assert "no warm-up, lr 2e-3" in fig.layout.title.text


def test_gradient_figure_uses_a_log_axis_that_spans_the_post_ln_collapse():
    pre, post = load_pair("no warm-up, lr 2e-3")
    fig = gradient_curves_figure(pre, post, layer=0)
    assert fig.layout.yaxis.type == "log"
    assert [trace.name for trace in fig.data] == [
        "pre-LN, each step",
        "pre-LN (geometric mean of 10 steps)",
        "post-LN, each step",
        "post-LN (geometric mean of 10 steps)",
    ]
    assert "layer 0" in fig.layout.title.text
    pre_line, post_line = fig.data[1].y, fig.data[3].y
    assert min(pre_line) > 1e-3 and min(post_line) < 1e-6  # five decades apart: only a log axis shows both


def test_gradient_figure_of_the_whole_model_and_its_layer_bounds():
    pre, post = load_pair("no warm-up, lr 1e-2")
    fig = gradient_curves_figure(pre, post, layer=None)
    assert "whole model" in fig.layout.title.text and fig.layout.yaxis.type == "log"
    assert max(fig.data[0].y) > 1e9  # the pre-LN explosion is kept by the downsampling
    with pytest.raises(ValueError, match="layer 4"):
        gradient_curves_figure(pre, post, layer=4)
