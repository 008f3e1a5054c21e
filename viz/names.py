"""How every figure names layers, heads and points of the residual stream: the trace's vocabulary, in words.

The scheme (the same in titles, axis titles, ticks, hover text and captions):
- A layer is the trace's `blocks.l`, counted from 0: l = 0 … L-1. A layer axis is titled "layer (blocks.l)"
  and ticked 0 … L-1; hover text names the module, e.g. `blocks.3`, `blocks.3.attn head 2`.
- A head is "head h", counted from 0: h = 0 … H-1.
- A point of the residual stream is `embed` (the embedding output, which is also `resid_pre[0]`), then
  `resid_post[l]`, the output of layer l (which is also `resid_pre[l + 1]`). A stream axis is ticked
  "embed", 0 … L-1 and titled to say that tick l is `resid_post[l]`; hover and the logit lens's rows use the
  full name. So the logit lens's "layer 1" … "layer L" (the output of each layer, counted from 1) are shown
  as `resid_post[0]` … `resid_post[L-1]`.
- Inside a layer: `resid_pre[l]` → `attn_out[l]` is added → `resid_mid[l]` → `ffn_out[l]` is added →
  `resid_post[l]`; LayerNorms are `embed.ln`, `blocks.l.ln1`, `blocks.l.ln2`, `ln_final`, `lm_head.ln`.
"""

from __future__ import annotations

import math

LAYER_AXIS = "layer (blocks.l)"
HEAD_AXIS = "head"
STREAM_AXIS = "residual stream: embed, then resid_post[l], the output of layer l"
MOST_TICKS = 25  # a 24-layer model's stream axis (embed + 24 points) still labels every point


def layer_ticks(layers: int, most: int = MOST_TICKS) -> dict:
    """Axis settings that tick layers 0 … L-1 at positions 0 … L-1 (every k-th past `most`)."""
    return sparse_ticks([str(layer) for layer in range(layers)], most)


def stream_hovers(layers: int) -> list[str]:
    """Hover text for each stream point: its name and where it sits, e.g. "resid_post[2] (output of blocks.2)"."""
    return ["embed (embedding output)"] + [f"resid_post[{layer}] (output of blocks.{layer})" for layer in range(layers)]


def stream_ticks(layers: int, most: int = MOST_TICKS) -> dict:
    """Axis settings that tick the stream points embed, 0 … L-1 at positions 0 … L (tick l is resid_post[l])."""
    return sparse_ticks(["embed"] + [str(layer) for layer in range(layers)], most)


def sparse_ticks(labels: list[str], most: int = MOST_TICKS) -> dict:
    """Axis settings that show `labels` at positions 0, 1, …: all of them up to `most`, else every k-th."""
    step = math.ceil(len(labels) / most) if len(labels) > most else 1
    shown = list(range(0, len(labels), step))
    return dict(tickmode="array", tickvals=shown, ticktext=[labels[i] for i in shown])


def lens_row_name(stream: str) -> str:
    """A logit-lens stream ("embed", "layer 1" … "layer L", each layer's output counted from 1) in this scheme."""
    words = stream.split()
    if len(words) == 2 and words[0] == "layer" and words[1].isdigit():
        return f"resid_post[{int(words[1]) - 1}]"
    return stream
