"""Figures of the "Gradients at initialisation" experiment: pure functions from an InitExperiment to a plotly figure.

Pre-LN and post-LN share every chart, each in its ARCH_COLORS colour; Xiong et al.'s predictions are
drawn as dashed lines or shaded bands so they read as references, not as measurements.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from rpln_core.init_report import ARCHITECTURES, InitExperiment, grad_parameter_name

from .layout import LEGEND_BELOW, finish, log_axis, sig4, value_axis  # value_axis: also this module's API
from .names import LAYER_AXIS, STREAM_AXIS, layer_ticks, stream_hovers, stream_ticks
from .palette import ARCH_COLORS, ARCH_NAMES

HALF_WIDTH_TICKS = 13  # the gradient chart shares its row with the sweep: past 12 layers, every second tick


def translucent(hex_color: str, alpha: float) -> str:
    """`#rrggbb` as an rgba() string with opacity `alpha`, for bands drawn behind the measured lines."""
    red, green, blue = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def measured_line(arch: str, x: list[int], values: list[float], hover: str, **scatter) -> go.Scatter:
    """One architecture's measurements in its colour; `hover` follows "<arch name>: " in the hover text."""
    return go.Scatter(
        x=x,
        y=sig4(values),
        mode="lines+markers",
        name=ARCH_NAMES[arch],
        line=dict(color=ARCH_COLORS[arch]),
        hovertemplate=f"{ARCH_NAMES[arch]}: {hover}<extra></extra>",
        **scatter,
    )


def settings_text(exp: InitExperiment) -> str:
    """The settings every title repeats, so a saved image says what it measured."""
    return f"width {exp.width}, init std {exp.init_std:.3g}, seed {exp.seed}"


def finish_titled(fig: go.Figure, what: str, settings: str) -> go.Figure:
    """`finish` with the settings on a smaller second title line: these charts share a row, where one long line
    would run past the chart's edge."""
    finish(fig, f"{what}<br><span style='font-size:12px'>{settings}</span>")
    return fig.update_layout(margin_t=70)


def layer_gradients_figure(exp: InitExperiment) -> go.Figure:
    """Gradient norm of each layer's FFN output weight (blocks.0 … blocks.L-1), pre-LN against post-LN."""
    layers = list(range(exp.depth))  # blocks.l, counted from 0 as in the trace
    # grad_parameter_name counts layers from 1; hover names both our module and transformers' parameter.
    parameters = [f"blocks.{layer} ({grad_parameter_name(layer + 1)})" for layer in layers]
    fig = go.Figure()
    for arch in ARCHITECTURES:
        norms = exp.gradients[arch].layer_grad_norms
        fig.add_trace(measured_line(arch, layers, norms, "%{customdata}: ‖∂loss/∂W‖ = %{y:.4g}", customdata=parameters))
    every_norm = [norm for arch in ARCHITECTURES for norm in exp.gradients[arch].layer_grad_norms]
    fig.update_xaxes(title=LAYER_AXIS, **layer_ticks(exp.depth, most=HALF_WIDTH_TICKS))
    fig.update_yaxes(title="‖∂ MLM loss / ∂ FFN output weight‖", **value_axis(every_norm))
    fig.update_layout(legend=LEGEND_BELOW)
    return finish_titled(fig, "Gradient of each layer's FFN output weight at init",
                         f"{exp.depth} layers, {settings_text(exp)}")


def depth_sweep_figure(exp: InitExperiment) -> go.Figure:
    """Last layer's gradient norm against depth L (log-log), with Theorem 1's c/√L through pre-LN's shallowest point."""
    depths = list(exp.sweep_depths)
    fig = go.Figure()
    # The depth the other charts show is drawn larger, so the two views can be matched up.
    marker = dict(size=[11 if depth == exp.depth else 7 for depth in depths])
    every_norm = []
    for arch in ARCHITECTURES:
        norms = exp.sweep_last_layer_norms(arch)
        every_norm += list(norms)
        fig.add_trace(measured_line(arch, depths, norms, "L = %{x}, last layer ‖∂loss/∂W‖ = %{y:.4g}", marker=marker))
    # Theorem 1 gives pre-LN's rate, not its constant: anchor c at the shallowest model, where
    # finite-depth effects matter least for the constant, and let the slope speak for the theorem.
    first_depth, first_norm = depths[0], exp.sweep_last_layer_norms("pre-ln")[0]
    scale = first_norm * math.sqrt(first_depth)
    reference = [scale / math.sqrt(depth) for depth in depths]
    every_norm += reference  # the axis spans the reference line too, so its ticks must cover it
    fig.add_trace(
        go.Scatter(
            x=depths,
            y=sig4(reference),
            mode="lines",
            name=f"Theorem 1 (pre-LN): c/√L through L = {first_depth}",
            line=dict(color=ARCH_COLORS["pre-ln"], dash="dash", width=1.5),
            hovertemplate="c/√L at L = %{x}: %{y:.4g}<extra></extra>",
        )
    )
    # On log-log axes 1/√L is a straight line of slope -1/2; ticks at the measured depths read as plain numbers.
    fig.update_xaxes(title="depth L (layers)", type="log", tickvals=depths, ticktext=[str(d) for d in depths])
    fig.update_yaxes(title="last layer's ‖∂ MLM loss / ∂ W‖", **log_axis(every_norm))
    fig.update_layout(legend=LEGEND_BELOW)
    return finish_titled(fig, "Last layer's gradient against depth (Xiong et al. Theorem 1)", settings_text(exp))


def residual_init_figure(exp: InitExperiment) -> go.Figure:
    """Mean residual norm after each layer at init, with Lemma 2's pre-LN band and post-LN level (all as norms)."""
    points = list(range(exp.depth + 1))  # n layers applied: embed, then resid_post[n - 1]
    labels = stream_hovers(exp.depth)  # the trace's names for the same points, shown on hover
    pre, post = exp.residuals["pre-ln"], exp.residuals["post-ln"]
    fig = go.Figure()
    # References first, so the measured lines are drawn over them. The band is one closed polygon:
    # along the upper bound, then back along the lower one.
    fig.add_trace(
        go.Scatter(
            x=points + points[::-1],
            y=sig4(pre.lemma2_high + pre.lemma2_low[::-1]),
            fill="toself",
            fillcolor=translucent(ARCH_COLORS["pre-ln"], 0.15),
            line=dict(width=0),
            name="pre-LN: Lemma 2 bounds",
            # Formulas in the hover keep the legend to one row; lemma2_bounds gives them as norms.
            hoveron="fills",
            text="Lemma 2, pre-LN, after n layers: (1 + n/2)d ≤ E‖x‖² ≤ (1 + 3n/2)d, drawn as √ to share the norm axis",
            hoverinfo="text",
        )
    )
    # Lemma 2's 3d/2 is for the sum that enters each post-LN LayerNorm; the stream between layers is
    # that LayerNorm's output, whose norm is √d at init, so the measured line sits below this level.
    fig.add_trace(
        go.Scatter(
            x=points,
            y=sig4(post.lemma2_low),
            mode="lines",
            name="post-LN: Lemma 2 level",
            line=dict(color=ARCH_COLORS["post-ln"], dash="dash", width=1.5),
            hovertemplate="Lemma 2, post-LN: E‖x‖² = 3d/2 before each LayerNorm; √(3d/2) = %{y:.4g}<extra></extra>",
        )
    )
    for arch in ARCHITECTURES:
        norms = exp.residuals[arch].mean_norms
        fig.add_trace(measured_line(arch, points, norms, "%{customdata}, mean ‖x‖ = %{y:.4g}", customdata=labels))
    every_value = pre.lemma2_high + pre.lemma2_low + post.lemma2_low + pre.mean_norms + post.mean_norms
    fig.update_xaxes(title=STREAM_AXIS, **stream_ticks(exp.depth))
    fig.update_yaxes(title="mean ‖x‖ over tokens", **value_axis(every_value))
    fig.update_layout(legend=LEGEND_BELOW)
    return finish_titled(fig, "Residual stream norm at init against Xiong et al.'s Lemma 2",
                         f"{exp.depth} layers, {settings_text(exp)}")
