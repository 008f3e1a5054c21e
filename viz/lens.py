"""The logit lens: each residual stream read through the model's own output head, at one masked position."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from rpln_core.capture import Trace

from .layout import check_index, finish, log10_colorbar, sig4
from .names import lens_row_name
from .text import token_label

CELL_TEXT_SIZE = 13  # px: the token in each cell must read at a glance
LOWEST_LOG10_P = -6  # colours stop at p = 1e-6: a top-5 token less likely than that is as pale as it gets
# Blues from a light tint to a mid blue, not to white nor to navy: dark cell text stays legible on every cell
# (contrast ≥ 4.5:1 at both ends), and a cell is tinted, so the grid reads as a grid.
COLORSCALE = [[0.0, "#eef4fa"], [0.5, "#a9cce6"], [1.0, "#4f93c9"]]
TEXT_COLOUR = "#0b1f33"


def lens_figure(trace: Trace, mask: int = 0) -> go.Figure | None:
    """Streams (embed, resid_post[0] … resid_post[L-1]) × rank heatmap of the lens at the `mask`-th lens position.

    Column "1" is the top-1 prediction of each stream, with the token written in every cell; cells are shaded
    by log10 of the probability, so 0.001, 0.01 and 0.1 are equal steps. None when the trace has no lens.
    """
    lens = trace.logit_lens
    if lens is None:
        return None
    check_index(mask, len(lens.positions), "Mask")
    position = lens.positions[mask]
    probs = lens.top_probs[:, mask].float()  # [streams, k]
    strings = [[token_label(s) for s in stream[mask]] for stream in lens.top_strings]  # [streams][k]
    ranks = [str(rank + 1) for rank in range(probs.shape[1])]
    rows = [lens_row_name(stream) for stream in lens.streams]
    log_p = probs.clamp_min(10.0**LOWEST_LOG10_P).log10()
    low = max(LOWEST_LOG10_P, math.floor(float(log_p.min()))) if log_p.numel() else LOWEST_LOG10_P
    fig = go.Figure(
        token_probability_heatmap(
            sig4(log_p), sig4(probs), x=ranks, y=rows, text=strings, low=low,
            hovertemplate="%{y}, rank %{x}: %{text} (p = %{customdata:.3g})<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", title="rank of the prediction", side="top")
    fig.update_yaxes(type="category", title="stream read", autorange="reversed", automargin=True)
    where = token_label(trace.tokens.strings[position])
    height = max(300, 30 * len(lens.streams) + 150)
    finish(fig, f"Logit lens at token {position}·{where}: the top predictions of each stream", height=height)
    # The rank axis sits on top: the title goes to the very top, above the axis's title.
    fig.update_layout(margin=dict(t=100), title=dict(y=1 - 8 / height, yanchor="top"))
    return fig


def token_probability_heatmap(z, probs, *, x, y, text, low: float, hovertemplate: str,
                              texttemplate: str = "%{text}") -> go.Heatmap:
    """Cells shaded by log10 p (`z`, from `low` up to 0) with their token written in them; `probs` for the hover."""
    return go.Heatmap(
        z=z,
        x=x,
        y=y,
        text=text,
        customdata=probs,
        texttemplate=texttemplate,
        textfont=dict(size=CELL_TEXT_SIZE, color=TEXT_COLOUR),
        zmin=low,
        zmax=0,
        colorscale=COLORSCALE,
        xgap=1,
        ygap=1,
        colorbar=dict(thickness=12, **log10_colorbar(low, 0, "p", most=4)),
        hovertemplate=hovertemplate,
    )
