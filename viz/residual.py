"""Residual-stream views: how large the stream grows, what each sublayer adds, and its largest activations."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from rpln_core import analysis
from rpln_core.capture import Trace

from .layout import LEGEND_BELOW, finish, log_axis, sig4, value_axis
from .names import LAYER_AXIS, STREAM_AXIS, layer_ticks, stream_hovers, stream_ticks
from .text import token_labels


def growth_text(factor: float) -> str:
    """How the fitted growth factor is written wherever it is shown."""
    return f"×{factor:.3f} per layer"


def norm_figure(trace: Trace) -> go.Figure:
    """Mean residual norm per stream point (axis from zero, see `value_axis`), with the fitted exponential and its
    growth factor."""
    growth = analysis.residual_growth(trace)
    norms = growth.resid_norm.double().numpy()
    streams = np.arange(len(norms))
    # The least-squares line through log(norm) whose slope residual_growth reports; its intercept is the one
    # that goes through the point of means.
    slope = np.log(growth.growth_factor)
    intercept = np.log(norms).mean() - slope * streams.mean()
    labels = stream_hovers(trace.num_layers)
    fitted = np.exp(intercept + slope * streams)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=streams.tolist(),
            y=sig4(norms),
            mode="lines+markers",
            name="mean ‖h‖ over tokens",
            customdata=labels,
            hovertemplate="%{customdata}: mean ‖h‖ = %{y:.4g}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=streams.tolist(),
            y=sig4(fitted),
            mode="lines",
            name=f"fit: {growth_text(growth.growth_factor)}",
            line=dict(dash="dash"),
            hoverinfo="skip",
        )
    )
    fig.update_xaxes(title=STREAM_AXIS, **stream_ticks(trace.num_layers))
    fig.update_yaxes(title="mean L2 norm over tokens", **value_axis(np.concatenate([norms, fitted])))
    fig.update_layout(legend=LEGEND_BELOW)
    title = f"Residual stream norm ({trace.architecture}): fitted growth {growth_text(growth.growth_factor)}"
    return finish(fig, title)


def sublayer_figure(trace: Trace) -> go.Figure:
    """Per layer: the norm attn_out and ffn_out add next to the norm of the stream they are added to."""
    growth = analysis.residual_growth(trace)
    resid_mid = analysis.token_mean(trace.resid_mid_norm)
    layers = list(range(trace.num_layers))
    lines = (
        ("‖resid_pre[l]‖", growth.resid_norm[:-1], None, dict(color="#1f77b4")),
        ("‖attn_out[l]‖", growth.attn_out_norm, growth.attn_ratio, dict(color="#1f77b4", dash="dot")),
        ("‖resid_mid[l]‖", resid_mid, None, dict(color="#ff7f0e")),
        ("‖ffn_out[l]‖", growth.ffn_out_norm, growth.ffn_ratio, dict(color="#ff7f0e", dash="dot")),
    )
    fig = go.Figure()
    for name, values, ratio, line in lines:
        hover = f"blocks.%{{x}}: {name.replace('[l]', '[%{x}]')} = %{{y:.4g}}"
        if ratio is not None:
            hover += " (%{customdata:.3f} of the stream it is added to)"
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=sig4(values),
                customdata=sig4(ratio) if ratio is not None else None,
                mode="lines+markers",
                name=name,
                line=line,
                hovertemplate=hover + "<extra></extra>",
            )
        )
    fig.update_xaxes(title=LAYER_AXIS, **layer_ticks(trace.num_layers))
    every_value = np.concatenate([np.asarray(sig4(values), dtype=float) for _, values, _, _ in lines])
    fig.update_yaxes(title="mean L2 norm over tokens", **value_axis(every_value))
    fig.update_layout(legend=LEGEND_BELOW)
    return finish(fig, "What each sublayer adds, next to the residual stream it is added to")


def massive_figure(trace: Trace) -> go.Figure:
    """Largest |h| and median |h| per stream point (log scale), with the token and dimension of the largest."""
    massive = analysis.massive_activations(trace)
    names = stream_hovers(trace.num_layers)
    tokens = token_labels(trace)
    where = [
        [tokens[index], dim, ratio, name]
        for index, dim, ratio, name in zip(massive.token.tolist(), massive.dim.tolist(), sig4(massive.ratio), names)
    ]
    streams = list(range(len(names)))
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=streams,
            y=sig4(massive.top),
            customdata=where,
            mode="lines+markers",
            name="largest |h|",
            hovertemplate="%{customdata[3]}: largest |h| = %{y:.4g} at token %{customdata[0]}, dim %{customdata[1]}"
            " (%{customdata[2]:.0f}× the median)<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=streams,
            y=sig4(massive.median),
            customdata=names,
            mode="lines+markers",
            name="median |h|",
            hovertemplate="%{customdata}: median |h| = %{y:.4g}<extra></extra>",
        )
    )
    ratio = massive.ratio.clone()
    ratio[~ratio.isfinite()] = 0.0
    peak = int(ratio.argmax())
    token, dim, _, _ = where[peak]
    # The legend sits below the plot, so the note on the largest ratio never lands on it.
    fig.add_annotation(
        x=peak,
        y=float(np.log10(max(float(massive.top[peak]), 1e-30))),  # a log axis places annotations in log10 units
        text=f"token {token}, dim {dim}: {float(massive.ratio[peak]):.0f}× the median",
        showarrow=True,
        arrowhead=2,
        ax=0,
        ay=-30,
        font=dict(size=11),
        bgcolor="rgba(255,255,255,0.8)",
    )
    fig.update_xaxes(title=STREAM_AXIS, **stream_ticks(trace.num_layers))
    values = np.concatenate([massive.top.float().numpy(), massive.median.float().numpy()])
    fig.update_yaxes(title="|activation|", **log_axis(values), range=headroom_range(values))
    fig.update_layout(legend=LEGEND_BELOW)
    return finish(fig, "Massive activations: the largest |h| against the typical one")


def headroom_range(values: np.ndarray) -> list[float] | None:
    """A log axis's range (log10 units) over the positive `values`, with room above the largest for a note."""
    positive = values[np.isfinite(values) & (values > 0)]
    if not len(positive):
        return None
    low, high = np.log10(positive.min()), np.log10(positive.max())
    span = max(high - low, 0.3)
    return [float(low - 0.05 * span), float(high + 0.3 * span)]
