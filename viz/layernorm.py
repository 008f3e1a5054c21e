"""LayerNorm views: what each LayerNorm saw (mean, std, the 1/σ it multiplied by) and what it learned (γ, β)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import torch

from rpln_core import analysis, frames
from rpln_core.capture import Trace

from .layout import finish, log10_colorbar, sig4, stacked
from .text import plot_label, token_labels

TINY = 1e-12  # floor before a log: a dimension the LayerNorm never saw non-zero would be -inf
# stats_table's columns, in order: where the LayerNorm sits, what it read, and its outlier dimensions.
STATS_COLUMNS = ("name", "module", "layer", "placement", "positions", "mean", "std", "scale", "max_abs",
                 "gamma_outliers", "beta_outliers")


def scale_heatmap(trace: Trace) -> go.Figure:
    """LayerNorm × token heatmap of log10(1/σ): how strongly each LayerNorm had to rescale each token.

    The MLM head's LayerNorm sees only the masked positions; its other cells are empty.
    """
    tokens = len(trace.tokens)
    scale = torch.full((len(trace.layernorms), tokens), float("nan"))
    for row, stats in enumerate(trace.layernorms):
        scale[row, stats.positions] = stats.scale.float()
    log_scale = scale.clamp_min(TINY).log10()
    names = [plot_label(stats.name) for stats in trace.layernorms]
    finite = log_scale[log_scale.isfinite()]
    low, high = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 0.0)
    fig = go.Figure(
        go.Heatmap(
            z=sig4(log_scale),
            x=token_labels(trace),
            y=names,
            customdata=sig4(scale),
            colorscale="Viridis",
            colorbar=dict(thickness=12, **log10_colorbar(low, high, "1/σ")),
            hovertemplate="%{y} at %{x}: 1/σ = %{customdata:.4g}<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", title="token", tickangle=-60)
    fig.update_yaxes(type="category", title="LayerNorm", autorange="reversed")
    return finish(fig, "LayerNorm scale 1/σ per token (log colour scale)", height=max(380, 16 * len(names) + 120))


def stats_table(trace: Trace) -> pd.DataFrame:
    """One row per LayerNorm, in the order they ran: where it sits, how many positions it read, its input statistics
    averaged over them (from rpln_core.frames.layernorms_frame), and its γ and β outlier dimensions."""
    per_position = frames.layernorms_frame(trace)
    table = per_position.groupby("name", sort=False).agg(
        module=("module", "first"),
        layer=("layer", "first"),
        placement=("placement", "first"),
        positions=("position", "size"),
        **{statistic: (statistic, "mean") for statistic in ("mean", "std", "scale", "max_abs")},
    ).reset_index()
    outliers = {entry.name: entry for entry in analysis.layernorm_outliers(trace)}
    table["gamma_outliers"] = [len(outliers[name].gamma_dims) for name in table["name"]]
    table["beta_outliers"] = [len(outliers[name].beta_dims) for name in table["name"]]
    return table[list(STATS_COLUMNS)]


def gamma_beta_figure(trace: Trace, name: str) -> go.Figure:
    """γ and β of the LayerNorm `name` per hidden dimension, with the outlier dimensions (|z| > 3) marked."""
    stats = trace.layernorm(name)
    outliers = next(entry for entry in analysis.layernorm_outliers(trace) if entry.name == name)
    fig = stacked()
    dims = list(range(stats.weight.numel()))
    panels = (
        ("γ (weight)", stats.weight, outliers.gamma_dims, outliers.gamma_z, "y"),
        ("β (bias)", stats.bias, outliers.beta_dims, outliers.beta_z, "y2"),
    )
    for label, values, flagged, z, axis in panels:
        fig.add_trace(
            go.Scatter(
                x=dims,
                y=sig4(values),
                mode="lines",
                name=label,
                line=dict(width=1),
                hovertemplate=f"dim %{{x}}: {label.split()[0]} = %{{y:.4g}}<extra></extra>",
                yaxis=axis,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=flagged,
                y=sig4(values[flagged]) if flagged else [],
                customdata=sig4(z),
                mode="markers",
                name=f"{label.split()[0]} outlier dims",
                marker=dict(color="crimson", size=8, symbol="circle-open", line=dict(width=2)),
                hovertemplate="outlier dim %{x}: %{y:.4g} (z = %{customdata:.1f})<extra></extra>",
                yaxis=axis,
            )
        )
        fig.layout["yaxis" if axis == "y" else "yaxis2"].title = label
    fig.update_layout(xaxis=dict(title="hidden dimension"))
    fig.update_layout(legend=dict(orientation="h", y=-0.2))
    flagged = len(set(outliers.gamma_dims) | set(outliers.beta_dims))
    title = f"{plot_label(name)} ({stats.placement}): γ and β per dimension, {flagged} outlier dims (|z| > 3)"
    return finish(fig, title, height=420)


def abs_input_heatmap(trace: Trace) -> go.Figure:
    """LayerNorm × hidden dimension heatmap of mean |input| (log colour scale): outlier dims are vertical stripes."""
    names = [plot_label(stats.name) for stats in trace.layernorms]
    values = torch.stack([stats.abs_mean_per_dim.float() for stats in trace.layernorms])  # [layernorms, hidden]
    log_values = values.clamp_min(TINY).log10()
    fig = go.Figure(
        go.Heatmap(
            z=sig4(log_values),
            y=names,
            colorscale="Viridis",
            colorbar=dict(thickness=12, **log10_colorbar(float(log_values.min()), float(log_values.max()), "mean |x|")),
            hovertemplate="%{y} dim %{x}: log10 mean |input| = %{z:.2f}<extra></extra>",
        )
    )
    fig.update_xaxes(title="hidden dimension")
    fig.update_yaxes(type="category", title="LayerNorm input", autorange="reversed")
    return finish(fig, "Mean |input| of each LayerNorm per hidden dimension", height=max(380, 16 * len(names) + 120))
