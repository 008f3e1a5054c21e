"""Attention views: one head in full, every head as a thumbnail, and the per-head summaries of `analysis`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from rpln_core import analysis
from rpln_core.capture import Trace

from .layout import check_index, finish, side_by_side, sig4
from .names import HEAD_AXIS, LAYER_AXIS, layer_ticks
from .text import plot_label, token_labels

GAP = 2  # pixels between model-view thumbnails
GAP_COLOUR = (205, 205, 205)  # grey, so near-white (diffuse) thumbnails still have an edge
# Anchors of a white → dark-blue scale, like plotly's "Blues", so the mosaic and the head view agree.
BLUES = np.array([(247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107)], dtype=np.float64)
COLORSCALE = "Blues"


def head_view(trace: Trace, layer: int, head: int) -> go.Figure:
    """Heatmap of one head's attention: rows are queries, columns the keys they read, each row sums to 1."""
    check_index(layer, trace.num_layers, "Layer")
    check_index(head, trace.num_heads, "Head")
    labels = token_labels(trace)
    heatmap = go.Heatmap(
        z=sig4(trace.attentions[layer, head]),  # [query, key]
        x=labels,
        y=labels,
        zmin=0,
        colorscale=COLORSCALE,
        colorbar=dict(title=dict(text="weight"), thickness=12),
        hovertemplate="%{y} → %{x}: %{z:.3f}<extra></extra>",
    )
    fig = go.Figure(heatmap)
    fig.update_xaxes(type="category", title="key token", tickangle=-60)
    fig.update_yaxes(type="category", title="query token", autorange="reversed")
    return finish(fig, f"blocks.{layer}.attn, head {head}: attention pattern", height=450)


MIN_CELL = 32
MOSAIC_SIDE = 400  # small models get bigger thumbnails, so their mosaic is not a stamp in the page
# The page shows the mosaic about this tall whatever its size, so a 24-layer mosaic (~850 px) is halved:
# its labels are drawn larger in proportion, to read at about LABEL_SIZE px once shown.
SHOWN_HEIGHT = 420
LABEL_SIZE, MAX_LABEL_SIZE = 12, 26  # px
LABEL_COLOUR = (68, 68, 68)
MARK_COLOUR = (230, 85, 13)  # orange, the opposite of the thumbnails' blues
MARK_WIDTH = GAP + 1  # the frame fills the gaps around the selected thumbnail and its outermost pixel


def thumbnail_size(layers: int, heads: int) -> int:
    """Pixels per thumbnail side: at least MIN_CELL, more when few heads leave the mosaic small."""
    return max(MIN_CELL, MOSAIC_SIDE // max(layers, heads))


@dataclass(frozen=True)
class Mosaic:
    """Where everything in the model view sits: "head" and the head numbers above, "layer (blocks.l)" (upwards)
    and the layer numbers on the left, then the thumbnails, each framed by a GAP-wide grey line."""

    layers: int
    heads: int
    cell: int

    @property
    def label_size(self) -> int:
        grid = max(self.layers, self.heads) * (self.cell + GAP)
        return min(MAX_LABEL_SIZE, max(LABEL_SIZE, round(LABEL_SIZE * grid / SHOWN_HEIGHT)))

    @property
    def left(self) -> int:
        """Pixels left of the grid: the title written upwards, then numbers up to three digits wide."""
        return round(2.8 * self.label_size) + 6

    @property
    def top(self) -> int:
        """Pixels above the grid: the title, then the numbers."""
        return round(2.4 * self.label_size) + 4

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole image in pixels."""
        return (self.left + GAP + self.heads * (self.cell + GAP), self.top + GAP + self.layers * (self.cell + GAP))

    def box(self, layer: int, head: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) pixels of the thumbnail of (`layer`, `head`), right and bottom excluded."""
        left = self.left + GAP + head * (self.cell + GAP)
        top = self.top + GAP + layer * (self.cell + GAP)
        return left, top, left + self.cell, top + self.cell

    def at(self, x: int, y: int) -> tuple[int, int] | None:
        """The (layer, head) whose thumbnail holds pixel (x, y), or None for a label, a gap or outside."""
        x, y = x - self.left - GAP, y - self.top - GAP
        if x < 0 or y < 0:
            return None
        head, column = divmod(x, self.cell + GAP)
        layer, row = divmod(y, self.cell + GAP)
        if layer >= self.layers or head >= self.heads or row >= self.cell or column >= self.cell:
            return None
        return layer, head


def model_view(trace: Trace, cell: int | None = None, selected: tuple[int, int] | None = None) -> Image.Image:
    """All heads at once: rows are layers (blocks.0 at the top), columns heads, each pattern shrunk (or enlarged)
    to `cell`×`cell` pixels, numbered around the edge, with the `selected` (layer, head) framed in orange.

    A pixel's colour is the weight its queries put on its keys (when pooling: the summed weight of the keys
    it covers, averaged over its queries), through a square root so weak patterns stay visible: focused
    heads draw dark lines, evenly spread ones stay pale. `model_view_cell` maps a click back to its head;
    `Mosaic` says where everything sits.
    """
    layers, heads, tokens, _ = trace.attentions.shape
    cell = cell or thumbnail_size(layers, heads)
    if cell < 1:
        raise ValueError("cell must be at least 1 pixel.")
    if selected is not None:
        selected = (check_index(selected[0], layers, "Layer"), check_index(selected[1], heads, "Head"))
    patterns = trace.attentions.float().reshape(layers * heads, 1, tokens, tokens)
    if tokens > cell:
        patterns = F.adaptive_avg_pool2d(patterns, cell)  # each pixel is the mean of the weights it covers
    elif tokens < cell:
        patterns = F.interpolate(patterns, size=(cell, cell), mode="nearest")
    # Pooling averages over the keys a pixel covers; multiplying back by their number gives their mass.
    mass = patterns.reshape(layers, heads, cell, cell) * max(tokens / cell, 1.0)
    colours = colormap(mass.clamp(0.0, 1.0).sqrt().numpy())  # [layers, heads, cell, cell, 3]

    grid = np.empty((layers, cell + GAP, heads, cell + GAP, 3), dtype=np.uint8)
    grid[:] = GAP_COLOUR
    grid[:, :cell, :, :cell] = colours.transpose(0, 2, 1, 3, 4)  # [layers, row, heads, column, rgb]
    mosaic = Mosaic(layers, heads, cell)
    canvas = np.full((mosaic.size[1], mosaic.size[0], 3), 255, dtype=np.uint8)
    left, top = mosaic.left, mosaic.top
    canvas[top : top + GAP, left:] = GAP_COLOUR  # the gap above the first row and left of the first column
    canvas[top:, left : left + GAP] = GAP_COLOUR
    canvas[top + GAP :, left + GAP :] = grid.reshape(layers * (cell + GAP), heads * (cell + GAP), 3)
    image = Image.fromarray(canvas)
    draw_labels(image, mosaic, selected)
    if selected is not None:
        left, top, right, bottom = mosaic.box(*selected)
        ImageDraw.Draw(image).rectangle(
            (left - GAP, top - GAP, right + GAP - 1, bottom + GAP - 1), outline=MARK_COLOUR, width=MARK_WIDTH
        )
    return image


def label_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError):  # a Pillow without FreeType has only its small bitmap font
        return ImageFont.load_default()


def draw_labels(image: Image.Image, mosaic: Mosaic, selected: tuple[int, int] | None) -> None:
    """Head numbers above the columns, layer numbers left of the rows (every k-th if they would touch), their
    titles, and the selected layer's and head's numbers in the frame's colour."""
    size = mosaic.label_size
    draw, font = ImageDraw.Draw(image), label_font(size)
    pitch = mosaic.cell + GAP
    widest = draw.textlength(str(max(mosaic.layers, mosaic.heads) - 1), font=font)
    head_step = math.ceil((widest + 4) / pitch)
    layer_step = math.ceil((size + 2) / pitch)
    for head in range(mosaic.heads):
        chosen = selected is not None and head == selected[1]
        if head % head_step == 0 or chosen:
            left, _, right, _ = mosaic.box(0, head)
            draw.text(((left + right) / 2, mosaic.top - 3), str(head), font=font, anchor="ms",
                      fill=MARK_COLOUR if chosen else LABEL_COLOUR)
    for layer in range(mosaic.layers):
        chosen = selected is not None and layer == selected[0]
        if layer % layer_step == 0 or chosen:
            _, top, _, bottom = mosaic.box(layer, 0)
            draw.text((mosaic.left - 4, (top + bottom) / 2), str(layer), font=font, anchor="rm",
                      fill=MARK_COLOUR if chosen else LABEL_COLOUR)
    draw.text((mosaic.left + GAP, size + 2), "head", font=font, anchor="ls", fill=LABEL_COLOUR)
    height = mosaic.size[1] - mosaic.top - GAP
    for title in (LAYER_AXIS, "layer"):  # the longest that fits along the rows
        length = math.ceil(draw.textlength(title, font=font))
        if length <= height:
            upright = Image.new("RGB", (length, size + 4), "white")
            ImageDraw.Draw(upright).text((0, size), title, font=font, anchor="ls", fill=LABEL_COLOUR)
            image.paste(upright.rotate(90, expand=True), (2, mosaic.top + GAP + (height - length) // 2))
            break


def colormap(values: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., 3] for `values` in [0, 1], through the BLUES anchors."""
    positions = np.linspace(0.0, 1.0, len(BLUES))
    flat = np.clip(values, 0.0, 1.0).ravel()
    rgb = np.stack([np.interp(flat, positions, BLUES[:, channel]) for channel in range(3)], axis=-1)
    return rgb.round().astype(np.uint8).reshape(*values.shape, 3)


def model_view_cell(
    x: int, y: int, trace_or_shape: Trace | tuple[int, int], cell: int | None = None
) -> tuple[int, int] | None:
    """The (layer, head) whose thumbnail holds pixel (x, y) of `model_view`, or None for a label, a gap or outside.

    `trace_or_shape` is the trace drawn, or its (layers, heads); `cell` as given to `model_view`.
    """
    if isinstance(trace_or_shape, Trace):
        layers, heads = trace_or_shape.num_layers, trace_or_shape.num_heads
    else:
        layers, heads = trace_or_shape
    return Mosaic(layers, heads, cell or thumbnail_size(layers, heads)).at(int(x), int(y))


def entropy_heatmap(trace: Trace) -> go.Figure:
    """Layer × head heatmap of the mean attention entropy (nats): low means focused, high means spread out."""
    entropy = analysis.attention_entropy(trace)  # [layers, heads]
    uniform = math.log(len(trace.tokens))
    fig = go.Figure(
        go.Heatmap(
            z=sig4(entropy),
            zmin=0,
            zmax=uniform,
            colorscale="Viridis",
            colorbar=dict(title=dict(text="nats"), thickness=12),
            hovertemplate="blocks.%{y}.attn head %{x}: %{z:.3f} nats<extra></extra>",
        )
    )
    fig.update_xaxes(title=HEAD_AXIS, dtick=1 if trace.num_heads <= 16 else None)
    fig.update_yaxes(title=LAYER_AXIS, autorange="reversed", **layer_ticks(trace.num_layers))
    title = f"Attention entropy per head (uniform over {len(trace.tokens)} tokens = {uniform:.2f} nats)"
    return finish(fig, title)


def rollout_heatmap(trace: Trace, layer: int | None = None) -> go.Figure:
    """Attention rollout (Abnar & Zuidema 2020) up to `layer` (the last by default): query × input token."""
    layer = trace.num_layers - 1 if layer is None else check_index(layer, trace.num_layers, "Layer")
    rollout = analysis.attention_rollout(trace)[layer]  # [tokens (layer output), tokens (input)]
    labels = token_labels(trace)
    fig = go.Figure(
        go.Heatmap(
            z=sig4(rollout),
            x=labels,
            y=labels,
            zmin=0,
            colorscale=COLORSCALE,
            colorbar=dict(title=dict(text="share"), thickness=12),
            hovertemplate=f"resid_post[{layer}] at %{{y}} ← embed at %{{x}}: %{{z:.3f}}<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", title="input token (embed)", tickangle=-60)
    fig.update_yaxes(type="category", title=f"token in resid_post[{layer}] (output of blocks.{layer})",
                     autorange="reversed")
    return finish(fig, f"Attention rollout through blocks.0 … blocks.{layer}", height=450)


def sinks_figure(trace: Trace) -> go.Figure:
    """Share of attention on <s>, on </s> and on punctuation per layer (mean over heads), and <s> per head."""
    sinks = analysis.attention_sinks(trace)
    layers = list(range(trace.num_layers))
    fig = side_by_side((0.55, 0.45), titles=("mean over heads", plot_label("on <s>, per head")))
    for name, shares in (("<s>", sinks.bos), ("</s>", sinks.eos), ("punctuation", sinks.punctuation)):
        label = plot_label(name)
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=sig4(shares.mean(dim=-1)),
                mode="lines+markers",
                name=label,
                hovertemplate=f"blocks.%{{x}}: %{{y:.3f}} of attention on {label}<extra></extra>",
            )
        )
    fig.add_trace(
        go.Heatmap(
            z=sig4(sinks.bos),
            zmin=0,
            zmax=1,
            colorscale=COLORSCALE,
            colorbar=dict(title=dict(text="share"), thickness=12, x=1.02),
            hovertemplate=f"blocks.%{{y}}.attn head %{{x}}: %{{z:.3f}} on {plot_label('<s>')}<extra></extra>",
            showlegend=False,
            xaxis="x2",
            yaxis="y2",
        )
    )
    ticks = layer_ticks(trace.num_layers)
    fig.update_layout(
        xaxis=dict(title=LAYER_AXIS, **ticks),
        yaxis=dict(title="share of attention", range=[0, 1.02]),
        xaxis2=dict(title=HEAD_AXIS),
        yaxis2=dict(title=LAYER_AXIS, autorange="reversed", **ticks),
    )
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    title = plot_label("Share of attention on <s>, </s> and punctuation")
    return finish(fig, title)
