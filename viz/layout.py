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
LEGEND_BELOW = dict(orientation="h", y=-0.25)  # under the plot, where it covers no line and no note
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


# Beyond this max / min ratio a linear axis squeezes the smaller values flat against zero, so the axis turns
# logarithmic. Below it a linear axis from zero is the honest one: a norm that stays within a few percent must
# read as flat, and "twice as large" must look twice as tall, which an autoscaled or a log axis hides.
LOG_FROM_SPAN = 10.0
MOST_LOG_TICKS = 8  # more labels than this on one log axis start to collide


def value_axis(values) -> dict:
    """Axis settings for sizes such as norms: linear from zero, or log (see `log_axis`) past a tenfold span.

    A log axis is only chosen when the values span more than a decade, so it too shows a flat line flat.
    """
    positive = positive_values(values)
    if len(positive) and positive.max() / positive.min() > LOG_FROM_SPAN:
        return log_axis(positive)
    return dict(type="linear", rangemode="tozero")


def log_axis(values) -> dict:
    """Settings for a log axis over `values` whose labels are whole numbers (0.5, 1, 2, 5, 10), never the
    bare digits plotly prints between powers of ten by itself."""
    positive = positive_values(values)
    if not len(positive):
        return dict(type="log")
    ticks = log_tick_values(float(positive.min()), float(positive.max()))
    return dict(type="log", tickmode="array", tickvals=ticks, ticktext=[number_text(tick) for tick in ticks])


def log10_colorbar(low: float, high: float, title: str, most: int = 5) -> dict:
    """A colour bar for log10 values whose ticks read as plain numbers (0.1, 1, 10) rather than exponents."""
    ticks = log_tick_values(10.0**low, 10.0**high, most)
    return dict(title=dict(text=title), tickvals=[math.log10(tick) for tick in ticks],
                ticktext=[number_text(tick) for tick in ticks])


def positive_values(values) -> np.ndarray:
    """The finite values above zero of `values` (any shape), flat: what a log axis can draw."""
    array = np.asarray(values.float() if hasattr(values, "float") else values, dtype=np.float64).ravel()
    return array[np.isfinite(array) & (array > 0)]


def log_tick_values(low: float, high: float, most: int = MOST_LOG_TICKS) -> list[float]:
    """Round tick values for a log axis over [low, high] (both > 0): 1, 2 and 5 of each decade when that gives
    2 to `most` ticks inside, else fewer decades (10^0, 10^3, …) or finer steps, else the ends rounded."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))

    def ticks(mantissas: tuple[float, ...], every: int = 1) -> list[float]:
        return [float(f"{m * 10.0**e:.6g}") for e in range(first - 1, last + 1) if e % every == 0 for m in mantissas]

    def inside(candidates: list[float]) -> int:
        return sum(low * (1 - 1e-9) <= tick <= high * (1 + 1e-9) for tick in candidates)

    candidates = ticks((1, 2, 5))
    if inside(candidates) > most:
        every = 1
        while inside(candidates := ticks((1,), every)) > most:
            every += 1
    for finer in ((1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        if inside(candidates) < 2:
            candidates = ticks(finer)
    for digits in (2, 3):  # within a few percent: label the ends and the middle
        if inside(candidates) < 2:
            candidates = sorted({float(f"{v:.{digits}g}") for v in (low, math.sqrt(low * high), high)})
    # Ticks just outside the values can still fall inside the axis, which plotly pads; farther ones never do.
    return [tick for tick in candidates if low / 3 <= tick <= high * 3]


def number_text(value: float) -> str:
    """A tick value as a reader writes it: 0.001, 0.5, 20, 5000; beyond, a power of ten (2×10<sup>−6</sup>)."""
    exponent = math.floor(math.log10(value) + 1e-9)
    if -3 <= exponent <= 4:
        return f"{value:g}"
    mantissa = f"{value / 10.0**exponent:.2g}"
    power = f"10<sup>{str(exponent).replace('-', '−')}</sup>"
    return power if mantissa == "1" else f"{mantissa}×{power}"


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

