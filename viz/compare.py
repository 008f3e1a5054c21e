"""Two models on one text, side by side: the teaching tab's residual, LayerNorm, entropy and prediction views.

Each model keeps its LayerNorm placement's colour (viz.palette); when both models share a placement the
right-hand one is dashed, so the two lines stay apart.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from rpln_core import compare as numbers
from rpln_core.compare import Comparison, ComparedModel

from .layout import finish, log_axis, side_by_side, sig4, value_axis
from .names import HEAD_AXIS, LAYER_AXIS, STREAM_AXIS, layer_ticks, stream_hovers, stream_ticks
from .palette import ARCH_COLORS
from .residual import growth_text
from .text import plot_label, visible_token

def line_style(comparison: Comparison, side: int) -> dict:
    """Colour by LayerNorm placement; dashed for the right-hand model when both have the same placement."""
    model = comparison.models[side]
    same = comparison.models[0].layout.architecture == comparison.models[1].layout.architecture
    return dict(color=ARCH_COLORS[model.layout.architecture], dash="dash" if same and side else None)


def legend_name(model: ComparedModel) -> str:
    return plot_label(f"{model.name} ({model.layout.architecture})")


def residual_comparison_figure(comparison: Comparison) -> go.Figure:
    """Mean residual-stream norm per stream point for both models (axis from zero, see `value_axis`), with each
    fitted growth factor."""
    fig = go.Figure()
    longest = max(m.trace.num_layers for m in comparison.models)
    every_norm = []
    for side, model in enumerate(comparison.models):
        residual = numbers.residual_norms(model)
        every_norm += list(residual["norms"])
        labels = stream_hovers(model.trace.num_layers)
        fig.add_trace(
            go.Scatter(
                x=list(range(len(residual["norms"]))),
                y=sig4(residual["norms"]),
                mode="lines+markers",
                name=f"{legend_name(model)}: {growth_text(residual['growth_factor'])}",
                line=line_style(comparison, side),
                customdata=labels,
                hovertemplate="%{customdata}: mean ‖h‖ = %{y:.4g}<extra></extra>",
            )
        )
    fig.update_xaxes(title=STREAM_AXIS, **stream_ticks(longest))
    fig.update_yaxes(title="mean L2 norm over tokens", **value_axis(every_norm))
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return finish(fig, "Residual-stream norm through the layers", height=420)


def layernorm_order(comparison: Comparison) -> list[str]:
    """Every LayerNorm name of either model, in depth order: the shared x axis of the scale chart."""
    names = list(dict.fromkeys(stats.name for model in comparison.models for stats in model.trace.layernorms))

    def depth(name: str) -> tuple:
        parts = name.split(".")
        if parts[0] == "embed":
            return (-1, 0)
        if parts[0] == "blocks":
            return (int(parts[1]), 1 if parts[2] == "ln1" else 2)
        return (math.inf, 0 if parts[0] == "ln_final" else 1)  # ln_final, then the LM head's own LayerNorm

    return sorted(names, key=depth)


def layernorm_scale_figure(comparison: Comparison) -> go.Figure:
    """Mean 1/σ each LayerNorm multiplies its input by, per LayerNorm, for both models (log scale)."""
    fig = go.Figure()
    order = layernorm_order(comparison)
    every_scale = []
    for side, model in enumerate(comparison.models):
        rows = sorted(numbers.layernorm_rows(model), key=lambda row: order.index(row["layernorm"]))
        every_scale += [row["mean_scale"] for row in rows]
        outliers = [len(row["gamma_outlier_dims"]) + len(row["beta_outlier_dims"]) for row in rows]
        fig.add_trace(
            go.Scatter(
                x=[row["layernorm"] for row in rows],
                y=sig4([row["mean_scale"] for row in rows]),
                mode="lines+markers",
                name=legend_name(model),
                line=line_style(comparison, side),
                customdata=[[row["placement"], row["mean_input_std"], n] for row, n in zip(rows, outliers)],
                hovertemplate=(
                    "%{x} (%{customdata[0]})<br>mean 1/σ = %{y:.4g}, input σ = %{customdata[1]:.4g}"
                    "<br>γ/β outlier dimensions: %{customdata[2]}<extra></extra>"
                ),
            )
        )
    fig.update_xaxes(title="LayerNorm, in depth order", categoryorder="array", categoryarray=order, tickangle=-45)
    fig.update_yaxes(title="mean 1/σ over tokens", **log_axis(every_scale))
    fig.update_layout(legend=dict(orientation="h", y=-0.45))
    return finish(fig, "How strongly each LayerNorm rescales its input", height=440)


def entropy_comparison_figure(comparison: Comparison) -> go.Figure:
    """Layer × head attention entropy of both models, side by side on one colour scale."""
    left, right = comparison.models
    fig = side_by_side(titles=(legend_name(left), legend_name(right)))
    top = max(math.log(len(m.trace.tokens)) for m in comparison.models)
    for panel, model in enumerate(comparison.models):
        suffix = "2" if panel else ""
        fig.add_trace(
            go.Heatmap(
                z=sig4(numbers.entropy(model)),
                zmin=0,
                zmax=top,
                colorscale="Viridis",
                showscale=panel == 1,
                colorbar=dict(title=dict(text="nats"), thickness=12),
                hovertemplate="blocks.%{y}.attn head %{x}: %{z:.3f} nats<extra></extra>",
                xaxis=f"x{suffix}",
                yaxis=f"y{suffix}",
            )
        )
        fig.layout[f"xaxis{suffix}"].update(title=HEAD_AXIS, dtick=1)
        fig.layout[f"yaxis{suffix}"].update(
            title=LAYER_AXIS, autorange="reversed", **layer_ticks(model.trace.num_layers)
        )
    return finish(fig, f"Attention entropy per head (uniform spread = {top:.2f} nats)", height=400)


def fill_mask_rows(comparison: Comparison) -> list[dict]:
    """The two models' predictions side by side: one row per mask and rank; tokens as `visible_token` shows them."""
    left, right = (numbers.predictions(m) for m in comparison.models)
    rows = []
    for mask in range(max(len(left), len(right))):
        left_row = left[mask] if mask < len(left) else []
        right_row = right[mask] if mask < len(right) else []
        for rank in range(max(len(left_row), len(right_row))):
            row = {"mask": mask + 1, "rank": rank + 1}
            for side, predictions in zip(("left", "right"), (left_row, right_row)):
                found = predictions[rank] if rank < len(predictions) else {"token": "", "score": None}
                row[f"{side} token"] = visible_token(found["token"]) if found["score"] is not None else ""
                row[f"{side} score"] = None if found["score"] is None else round(found["score"], 4)
            rows.append(row)
    return rows
