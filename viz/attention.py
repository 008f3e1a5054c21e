"""Attention views: one head in full, every head as a thumbnail, and the per-head summaries of `analysis`."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch.nn.functional as F
from PIL import Image

from rpln_core import analysis
from rpln_core.capture import Trace

from .layout import check_index, finish, index_ticks, side_by_side, sig4
from .text import plot_label, token_labels

GAP = 2  # pixels between model-view thumbnails
GAP_COLOUR = (205, 205, 205)  # grey, so near-white (diffuse) thumbnails still have an edge
# Anchors of a white → dark-blue scale, like plotly's "Blues", so the mosaic and the head view agree.
BLUES = np.array([(247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107)], dtype=np.float64)
COLORSCALE = "Blues"


def layer_labels(count: int) -> list[str]:
    return [f"blocks.{layer}" for layer in range(count)]


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


def thumbnail_size(layers: int, heads: int) -> int:
    """Pixels per thumbnail side: at least MIN_CELL, more when few heads leave the mosaic small."""
    return max(MIN_CELL, MOSAIC_SIDE // max(layers, heads))


def model_view(trace: Trace, cell: int | None = None) -> Image.Image:
    """All heads at once: rows are layers, columns heads, each pattern shrunk (or enlarged) to `cell`×`cell`.

    A pixel's colour is the weight its queries put on its keys (when pooling: the summed weight of the keys
    it covers, averaged over its queries), through a square root so weak patterns stay visible: focused
    heads draw dark lines, evenly spread ones stay pale. The image is (heads·(cell+GAP)) × (layers·(cell+GAP))
    pixels; `model_view_cell` maps a click back to its head.
    """
    layers, heads, tokens, _ = trace.attentions.shape
    cell = cell or thumbnail_size(layers, heads)
    if cell < 1:
        raise ValueError("cell must be at least 1 pixel.")
    patterns = trace.attentions.float().reshape(layers * heads, 1, tokens, tokens)
    if tokens > cell:
        patterns = F.adaptive_avg_pool2d(patterns, cell)  # each pixel is the mean of the weights it covers
    elif tokens < cell:
        patterns = F.interpolate(patterns, size=(cell, cell), mode="nearest")
    # Pooling averages over the keys a pixel covers; multiplying back by their number gives their mass.
    mass = patterns.reshape(layers, heads, cell, cell) * max(tokens / cell, 1.0)
    colours = colormap(mass.clamp(0.0, 1.0).sqrt().numpy())  # [layers, heads, cell, cell, 3]

    canvas = np.empty((layers, cell + GAP, heads, cell + GAP, 3), dtype=np.uint8)
    canvas[:] = GAP_COLOUR
    canvas[:, :cell, :, :cell] = colours.transpose(0, 2, 1, 3, 4)  # [layers, row, heads, column, rgb]
    return Image.fromarray(canvas.reshape(layers * (cell + GAP), heads * (cell + GAP), 3))


def colormap(values: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., 3] for `values` in [0, 1], through the BLUES anchors."""
    positions = np.linspace(0.0, 1.0, len(BLUES))
    flat = np.clip(values, 0.0, 1.0).ravel()
    rgb = np.stack([np.interp(flat, positions, BLUES[:, channel]) for channel in range(3)], axis=-1)
    return rgb.round().astype(np.uint8).reshape(*values.shape, 3)


def model_view_cell(
    x: int, y: int, trace_or_shape: Trace | tuple[int, int], cell: int | None = None
) -> tuple[int, int] | None:
    """The (layer, head) whose thumbnail holds pixel (x, y) of `model_view`, or None for a gap or outside.

    `trace_or_shape` is the trace drawn, or its (layers, heads).
    """
    if isinstance(trace_or_shape, Trace):
        layers, heads = trace_or_shape.num_layers, trace_or_shape.num_heads
    else:
        layers, heads = trace_or_shape
    cell = cell or thumbnail_size(layers, heads)
    x, y = int(x), int(y)
    if x < 0 or y < 0:
        return None
    head, column = divmod(x, cell + GAP)
    layer, row = divmod(y, cell + GAP)
    if layer >= layers or head >= heads or row >= cell or column >= cell:
        return None
    return layer, head


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
    fig.update_xaxes(title="head", dtick=1 if trace.num_heads <= 16 else None)
    fig.update_yaxes(title="layer", autorange="reversed", **index_ticks(layer_labels(trace.num_layers)))
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
            hovertemplate=f"blocks.{layer} output at %{{y}} ← input %{{x}}: %{{z:.3f}}<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", title="input token (embed)", tickangle=-60)
    fig.update_yaxes(type="category", title=f"token at the output of blocks.{layer}", autorange="reversed")
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
    layer_ticks = index_ticks(layer_labels(trace.num_layers))
    fig.update_layout(
        xaxis=dict(title="layer", **layer_ticks),
        yaxis=dict(title="share of attention", range=[0, 1.02]),
        xaxis2=dict(title="head"),
        yaxis2=dict(title="layer", autorange="reversed", **layer_ticks),
    )
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    title = plot_label("Share of attention on <s>, </s> and punctuation")
    return finish(fig, title)
