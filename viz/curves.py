"""Training curves of the pre-LN / post-LN twins: loss and gradient norm against the optimizer step."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from rpln_core.curves import TrainingCurve, downsample, moving_average

from .layout import check_index, finish, log_axis, sig4
from .palette import ARCH_COLORS, ARCH_NAMES

MAX_POINTS = 1000  # per trace: a 6,500-step log would otherwise send 6,500 points for every line
GRADIENT_SMOOTH = 10  # light: the post-LN collapse happens within ~100 steps and must stay sharp
RAW_OPACITY = 0.25
REFERENCE_LINE = dict(color="#666666", width=1.5)


def loss_curves_figure(pre: TrainingCurve, post: TrainingCurve, smooth: int = 25) -> go.Figure:
    """Loss per step of both runs (faint) with a `smooth`-step moving average, the unigram baseline and warm-up end."""
    fig = go.Figure()
    for curve in (pre, post):
        _add_series(fig, curve, curve.loss, smooth, quantity="loss")
    baseline = pre.unigram_loss if pre.unigram_loss is not None else post.unigram_loss
    if baseline is not None:
        fig.add_hline(
            y=baseline,
            line=dict(dash="dot", **REFERENCE_LINE),
            annotation_text="unigram baseline",
            annotation_position="top right",
            annotation_bgcolor="rgba(255,255,255,0.7)",
        )
    _mark_warmup_end(fig, pre, post)
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="masked-LM loss (nats)")
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return finish(fig, f"Training loss, {_setting_label(pre, post)}")


def gradient_curves_figure(
    pre: TrainingCurve, post: TrainingCurve, layer: int | None = 0, smooth: int = GRADIENT_SMOOTH
) -> go.Figure:
    """Gradient norm per step (log scale) of encoder layer `layer`, or of the whole model when `layer` is None.

    The log axis is what shows a post-LN collapse: its first layer's norm falls by five decades or more.
    """
    if layer is None:
        pre_norms, post_norms, what = pre.grad_norm_total, post.grad_norm_total, "the whole model"
    else:
        check_index(layer, min(pre.num_layers, post.num_layers), "layer")
        pre_norms, post_norms = pre.grad_norm_layers[layer], post.grad_norm_layers[layer]
        what = f"layer {layer} (blocks.{layer})"
    fig = go.Figure()
    for curve, norms in ((pre, pre_norms), (post, post_norms)):
        _add_series(fig, curve, norms, smooth, quantity="‖grad‖", log=True)
    _mark_warmup_end(fig, pre, post)
    fig.update_xaxes(title="step")
    # Labels are whole numbers or powers of ten (the norm can span 1e-9 to 1e9), never plotly's bare digits.
    fig.update_yaxes(title="gradient L2 norm", **log_axis(np.concatenate([pre_norms, post_norms])))
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return finish(fig, f"Gradient norm of {what} before clipping, {_setting_label(pre, post)}")


def _add_series(fig: go.Figure, curve: TrainingCurve, values, smooth: int, quantity: str, log: bool = False) -> None:
    """The raw per-step values (faint), their moving average, and a mark at each step that logged inf or nan.

    On a log axis the average is geometric (a mean of log10): an arithmetic one would let a single spike
    lift a hundred quiet steps, and values at or below zero cannot be drawn, so they are left out.
    """
    values = np.asarray(values, dtype=np.float64)
    drawable = np.isfinite(values)
    if log:
        drawable &= values > 0
    shown = np.where(drawable, values, np.nan)
    name = ARCH_NAMES[curve.architecture]
    if smooth > 1:
        _add_line(fig, curve, shown, f"{name}, each step", quantity, raw=True)
        if log:
            with np.errstate(divide="ignore", invalid="ignore"):
                smoothed = 10.0 ** moving_average(np.log10(shown), smooth)
        else:
            smoothed = moving_average(shown, smooth)
        average = f"{'geometric ' if log else ''}mean of {smooth} steps"
        _add_line(fig, curve, smoothed, f"{name} ({average})", f"{quantity} ({average})")
    else:
        _add_line(fig, curve, shown, name, quantity)
    _mark_non_finite(fig, curve, values, shown, quantity)


def _add_line(fig: go.Figure, curve: TrainingCurve, values, name: str, what: str, raw: bool = False) -> None:
    steps, values = downsample(curve.steps, values, MAX_POINTS)
    label = ARCH_NAMES[curve.architecture]
    fig.add_trace(
        go.Scatter(
            x=steps.tolist(),
            y=sig4(values),
            mode="lines",
            name=name,
            legendgroup=label,  # one click on the legend hides a run's raw and averaged lines together
            showlegend=not raw,
            opacity=RAW_OPACITY if raw else 1.0,
            line=dict(color=ARCH_COLORS[curve.architecture], width=1 if raw else 2),
            hovertemplate=f"{label}, step %{{x}}: {what} = %{{y:.4g}}<extra></extra>",
        )
    )


def _mark_non_finite(fig: go.Figure, curve: TrainingCurve, values, shown, quantity: str) -> None:
    """Crosses along the top of the run's drawn values at the steps that logged inf or nan (plotly draws neither)."""
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad) == 0:
        return
    bad = bad[:: -(-len(bad) // MAX_POINTS)]  # a run that stayed nan for thousands of steps: every k-th mark
    top = np.nanmax(shown) if np.isfinite(shown).any() else 1.0
    name = ARCH_NAMES[curve.architecture]
    fig.add_trace(
        go.Scatter(
            x=curve.steps[bad].tolist(),
            y=[float(sig4([top])[0])] * len(bad),
            customdata=[str(v) for v in values[bad].tolist()],
            mode="markers",
            name=f"{name}: {quantity} was inf/nan",
            legendgroup=name,
            marker=dict(color=ARCH_COLORS[curve.architecture], symbol="x", size=8),
            hovertemplate=f"{name}, step %{{x}}: {quantity} = %{{customdata}}<extra></extra>",
        )
    )


def _mark_warmup_end(fig: go.Figure, *curves: TrainingCurve) -> None:
    for step in sorted({curve.warmup_end for curve in curves} - {None}):
        fig.add_vline(
            x=step,
            line=dict(dash="dash", **REFERENCE_LINE),
            annotation_text="end of warm-up",
            annotation_position="top right",
        )


def _setting_label(pre: TrainingCurve, post: TrainingCurve) -> str:
    labels = dict.fromkeys(curve.setting.label for curve in (pre, post))
    return " vs ".join(labels)
