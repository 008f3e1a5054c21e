"""LayerNorm outlier dimensions switched off (rpln_core.ablation): how far each model's prediction moved."""

from __future__ import annotations

import math
from typing import Sequence

import plotly.graph_objects as go

from rpln_core.ablation import INTACT, OUTLIERS_OFF, AblationRun, OutlierAblation

from .layout import finish, side_by_side, sig4
from .palette import ARCH_COLORS
from .text import plot_label

CONDITIONS = (INTACT, OUTLIERS_OFF, "random dims off")  # the x axis: the controls are pooled into one bar


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def condition_values(result: OutlierAblation, measure: str) -> tuple[list[float], list[float], list[float]]:
    """Per condition, the mean over masks of `measure` (an AblationRun field), and how far below and above it the
    controls' lowest and highest lie (NaN, so no whisker, for the single runs)."""
    def of(run: AblationRun) -> float:
        return mean(getattr(run, measure))

    controls = [of(run) for run in result.controls]
    means = [of(result.run(INTACT)), of(result.run(OUTLIERS_OFF)), mean(controls)]
    none = math.nan
    return means, [none, none, means[2] - min(controls)], [none, none, max(controls) - means[2]]


def dims_text(dims: list[int]) -> str:
    shown = ", ".join(map(str, dims[:12]))
    return shown + (f" … ({len(dims)} in all)" if len(dims) > 12 else "")


def ablation_figure(results: Sequence[OutlierAblation]) -> go.Figure:
    """Left: probability of the intact top prediction; right: KL from the intact prediction; one bar per model."""
    fig = side_by_side(titles=("probability of the intact model's top token", "KL from the intact prediction (nats)"))
    for side, result in enumerate(results):
        outliers = dims_text(result.run(OUTLIERS_OFF).dims)
        name = plot_label(f"{result.model_name} ({result.architecture}): dims {outliers}")
        dashed = side == 1 and len(results) == 2 and results[0].architecture == result.architecture
        for panel, measure in enumerate(("intact_top_probability", "kl_from_intact")):
            means, below, above = condition_values(result, measure)
            suffix = "2" if panel else ""
            fig.add_trace(
                go.Bar(
                    x=list(CONDITIONS),
                    y=sig4(means),
                    # No caps: plotly reads a missing whisker as zero and would draw a cap on the single runs.
                    error_y=dict(type="data", symmetric=False, array=sig4(above), arrayminus=sig4(below), width=0,
                                 thickness=2),
                    name=name,
                    legendgroup=name,
                    showlegend=panel == 0,
                    marker=dict(color=ARCH_COLORS.get(result.architecture), pattern_shape="/" if dashed else ""),
                    hovertemplate=f"{plot_label(result.model_name)}, %{{x}}: %{{y:.4g}}<extra></extra>",
                    xaxis=f"x{suffix}",
                    yaxis=f"y{suffix}",
                )
            )
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.3))
    fig.layout.yaxis.update(rangemode="tozero")
    fig.layout.yaxis2.update(rangemode="tozero")
    controls = len(results[0].controls) if results else 0
    title = f"Switching off the LayerNorm outlier dimensions, against {controls} random sets of as many"
    return finish(fig, title, height=420)


def ablation_rows(results: Sequence[OutlierAblation]) -> list[dict]:
    """Every run of every model, one row per mask, with numbers shortened for a table."""
    rows = [row for result in results for row in result.to_rows()]
    for row in rows:
        row["intact_top_probability"] = round(row["intact_top_probability"], 4)
        row["kl_from_intact"] = round(row["kl_from_intact"], 4)
    return rows
