"""Residual-stream views: how large the stream grows, what each sublayer adds, and its largest activations."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from rpln_core import analysis
from rpln_core.capture import Trace

from .attention import layer_labels
from .layout import finish, index_ticks, sig4
from .text import plot_label


def stream_labels(layers: int) -> list[str]:
    """Names of the residual points the analyses index as streams: embed, resid_pre[1…L-1], resid_post[L-1]."""
    return ["embed"] + [f"resid_pre[{layer}]" for layer in range(1, layers)] + [f"resid_post[{layers - 1}]"]


def growth_text(factor: float) -> str:
    """How the fitted growth factor is written wherever it is shown."""
    return f"×{factor:.3f} per layer"


def norm_figure(trace: Trace) -> go.Figure:
    """Mean residual norm per stream point on a log scale, with the fitted exponential and its growth factor."""
    growth = analysis.residual_growth(trace)
    norms = growth.resid_norm.double().numpy()
    streams = np.arange(len(norms))
    # The least-squares line through log(norm) whose slope residual_growth reports; its intercept is the one
    # that goes through the point of means.
    slope = np.log(growth.growth_factor)
    intercept = np.log(norms).mean() - slope * streams.mean()
    labels = stream_labels(trace.num_layers)
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
            y=sig4(np.exp(intercept + slope * streams)),
            mode="lines",
            name=f"fit: {growth_text(growth.growth_factor)}",
            line=dict(dash="dash"),
            hoverinfo="skip",
        )
    )
    fig.update_xaxes(title="residual stream point", **index_ticks(labels))
    fig.update_yaxes(title="mean L2 norm", type="log")
    fig.update_layout(legend=dict(x=0.01, y=0.99, bgcolor="rgba(255,255,255,0.7)"))
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
        hover = f"blocks.%{{x}}: {name} = %{{y:.4g}}"
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
    fig.update_xaxes(title="layer", **index_ticks(layer_labels(trace.num_layers)))
    fig.update_yaxes(title="mean L2 norm over tokens", type="log")
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return finish(fig, "What each sublayer adds, next to the residual stream it is added to")


def massive_figure(trace: Trace) -> go.Figure:
    """Largest |h| and median |h| per stream point (log scale), with the token and dimension of the largest."""
    massive = analysis.massive_activations(trace)
    labels = stream_labels(trace.num_layers)
    strings = trace.tokens.strings
    where = [
        [f"{index}·{plot_label(strings[index])}", dim, ratio]
        for index, dim, ratio in zip(massive.token.tolist(), massive.dim.tolist(), sig4(massive.ratio))
    ]
    streams = list(range(len(labels)))
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=streams,
            y=sig4(massive.top),
            customdata=where,
            mode="lines+markers",
            name="largest |h|",
            hovertemplate="largest |h| = %{y:.4g} at token %{customdata[0]}, dim %{customdata[1]}"
            " (%{customdata[2]:.0f}× the median)<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=streams,
            y=sig4(massive.median),
            mode="lines+markers",
            name="median |h|",
            hovertemplate="median |h| = %{y:.4g}<extra></extra>",
        )
    )
    ratio = massive.ratio.clone()
    ratio[~ratio.isfinite()] = 0.0
    peak = int(ratio.argmax())
    token, dim, _ = where[peak]
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
    fig.update_xaxes(title="residual stream point", **index_ticks(labels))
    fig.update_yaxes(title="|activation|", type="log")
    fig.update_layout(legend=dict(x=0.01, y=0.99, bgcolor="rgba(255,255,255,0.7)"))
    return finish(fig, "Massive activations: the largest |h| against the typical one")
