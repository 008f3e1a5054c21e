"""The logit lens: each residual stream read through the model's own output head, at one masked position."""

from __future__ import annotations

import plotly.graph_objects as go

from rpln_core.capture import Trace

from .layout import check_index, finish, sig4
from .text import plot_label, token_label


def lens_figure(trace: Trace, mask: int = 0) -> go.Figure | None:
    """Streams (embed … layer L) × rank heatmap of the lens probabilities at the `mask`-th lens position.

    Column "1" is the top-1 prediction of each stream, with the token written in its cell; the other
    columns hold the rest of the top-k. None when the trace has no lens (no MLM head, or no mask).
    """
    lens = trace.logit_lens
    if lens is None:
        return None
    check_index(mask, len(lens.positions), "Mask")
    position = lens.positions[mask]
    probs = lens.top_probs[:, mask].float()  # [streams, k]
    strings = [[token_label(s) for s in stream[mask]] for stream in lens.top_strings]  # [streams][k]
    ranks = [str(rank + 1) for rank in range(probs.shape[1])]
    fig = go.Figure(
        go.Heatmap(
            z=sig4(probs),
            x=ranks,
            y=list(lens.streams),
            text=strings,
            texttemplate="%{text}",
            textfont=dict(size=11),
            zmin=0,
            zmax=1,
            colorscale="Blues",
            colorbar=dict(title=dict(text="p"), thickness=12),
            hovertemplate="%{y}, rank %{x}: %{text} (p = %{z:.3f})<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", title="rank of the prediction", side="top")
    fig.update_yaxes(type="category", title="stream read", autorange="reversed")
    where = plot_label(trace.tokens.strings[position])
    height = max(300, 22 * len(lens.streams) + 120)
    return finish(fig, f"Logit lens at token {position}·{where}: the top predictions of each stream", height=height)
