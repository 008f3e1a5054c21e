"""What every figure shares: one small look, and numbers rounded before they travel to the browser."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE = "plotly_white"
# The default template costs nothing per figure, while `update_layout(template=...)` re-validates the
# whole template: ~40 ms a figure, most of a request's rendering time. So the look is set once here.
pio.templates.default = TEMPLATE
MARGIN = dict(l=60, r=20, t=50, b=50)
HEIGHT = 380


def finish(fig: go.Figure, title: str, height: int = HEIGHT, **layout) -> go.Figure:
    """Apply the shared look: white template, tight margins, a title (already escaped where it holds text)."""
    fig.update_layout(
        title=dict(text=title, font=dict(size=14), x=0.01, xanchor="left"),
        height=height,
        margin=MARGIN,
        **layout,
    )
    return fig


# From this many values on, arrays travel as float32 binary (plotly's base64 "bdata"): 4 bytes a value,
# and plotly skips its per-element validation of lists, which cost ~0.4 s for a 49 x 1024 heatmap.
BINARY_FROM = 1024


def sig4(values) -> list | np.ndarray:
    """`values` (tensor, array or list, any shape) rounded to 4 significant digits: lists, or float32 when large.

    A value printed with four digits is a few characters of JSON instead of seventeen; NaN and ±inf
    become None in lists (NaN in arrays), which plotly understands as "no value".
    """
    array = np.asarray(values.float() if hasattr(values, "float") else values, dtype=np.float64)
    finite = np.isfinite(array)
    safe = np.where(finite & (array != 0), np.abs(array), 1.0)
    digits = 3 - np.floor(np.log10(safe))  # decimals that keep 4 significant digits
    # Divide (or multiply) by an exact power of ten, so the result is the double nearest the short
    # decimal and prints as it: 0.01235, not 0.012350000000000002.
    up, down = 10.0 ** np.clip(digits, 0, 300), 10.0 ** np.clip(-digits, 0, 300)
    rounded = np.where(digits >= 0, np.round(array * up) / up, np.round(array / down) * down)
    if array.size >= BINARY_FROM:
        return np.where(finite, rounded, np.nan).astype(np.float32)
    if finite.all():
        return rounded.tolist()
    out = rounded.astype(object)
    out[~finite] = None
    return out.tolist()


def index_ticks(labels: list[str]) -> dict:
    """Axis settings that show `labels` at positions 0, 1, …: duplicates are fine on a numeric axis."""
    return dict(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels)


def log10_colorbar(low: float, high: float, title: str) -> dict:
    """A colour bar for log10 values whose ticks read as plain numbers (0.1, 1, 10) rather than exponents."""
    first, last = math.floor(low), math.ceil(high)
    powers = list(range(first, last + 1)) if last > first else [first]
    return dict(title=dict(text=title), tickvals=powers, ticktext=[f"{10.0**p:g}" for p in powers])


def check_index(value: int, count: int, what: str) -> int:
    """`value` if it is a valid index into `count` items, else a ValueError that says the valid range."""
    if not 0 <= value < count:
        raise ValueError(f"{what} {value} does not exist: choose 0 to {count - 1}.")
    return value


# plotly's make_subplots builds a grid object and re-validates the layout: ~10 ms a figure, a tenth of a small
# model's whole request. Two panels need only two axis pairs with domains, written out here.
def side_by_side(widths: tuple[float, float] = (0.5, 0.5), gap: float = 0.12, titles: tuple[str, str] = ("", "")) -> go.Figure:
    """An empty figure with a left panel (axes x, y) and a right one (x2, y2); titles already escaped."""
    left_end = widths[0] / sum(widths) * (1 - gap)
    fig = go.Figure(
        layout=dict(
            xaxis=dict(domain=[0, left_end], anchor="y"),
            yaxis=dict(anchor="x"),
            xaxis2=dict(domain=[left_end + gap, 1], anchor="y2"),
            yaxis2=dict(anchor="x2"),
        )
    )
    for title, (start, end) in zip(titles, ((0, left_end), (left_end + gap, 1))):
        if title:
            fig.add_annotation(text=title, x=(start + end) / 2, y=1.0, xref="paper", yref="paper", xanchor="center",
                               yanchor="bottom", showarrow=False, font=dict(size=13))
    return fig


def stacked(gap: float = 0.08) -> go.Figure:
    """An empty figure with two panels sharing one x axis: the top one on y, the bottom one on y2."""
    middle = (1 - gap) / 2
    return go.Figure(
        layout=dict(
            xaxis=dict(anchor="y2"),
            yaxis=dict(domain=[middle + gap, 1], anchor="x"),
            yaxis2=dict(domain=[0, middle], anchor="x"),
        )
    )

