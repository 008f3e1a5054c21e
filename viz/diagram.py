"""Block diagram of one encoder layer, drawn from a LayerLayout: the stream flows bottom to top.

Boxes sit in one column (input at the bottom, output at the top); each residual connection leaves the
column on the right, bypasses its sublayer and re-joins at the "+" node. Box sizes are in pixels so
two diagrams side by side look alike whatever their width; positions are in data units, one row a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from rpln_core.architecture import LayerLayout

from .layout import finish
from .text import plot_label

HEIGHT = 420  # two diagrams fit side by side above a caption
MARGIN = dict(l=10, r=10, t=50, b=10)  # no axes to label
BOX_HALF_WIDTH, BOX_HALF_HEIGHT, ADD_RADIUS = 78, 13, 11  # pixels
RESIDUAL_X = 0.62  # where the skip path runs, right of the column (x axis spans -1 … 1)
ARROW = "#555555"
RESIDUAL = "#2ca02c"

# kind -> (fill, border): LayerNorms stand out in orange, sublayers in the blue of the other figures.
COLOURS = {
    "layernorm": ("#ffe1c2", "#ff7f0e"),
    "attention": ("#dbe8f5", "#1f77b4"),
    "ffn": ("#dbe8f5", "#1f77b4"),
    "add": ("#ffffff", RESIDUAL),
    "stream": ("#f0f0f0", "#888888"),
}
HOVER = {
    "layernorm": "normalises its input to mean 0, variance 1, then scales by γ and shifts by β",
    "attention": "mixes information between tokens",
    "ffn": "transforms each token on its own",
    "add": "the stream that skipped the sublayer is added back",
    "stream": "the residual stream",
}


@dataclass(frozen=True)
class Node:
    """One box of the column."""

    kind: str  # a LayerStep kind, or "stream" for the layer's input and output
    label: str
    module: str = ""  # shown on hover


INPUT = Node("stream", "resid_pre (layer input)")
OUTPUT = Node("stream", "resid_post (layer output)")
FINAL_LAYERNORM = "final LayerNorm"
AFTER_LAST_ONLY = "after the last layer only"
NO_FINAL_LAYERNORM = "no LayerNorm after the last layer"
NOTE_FONT = dict(size=11, color="#888888")


def layer_diagram(layout: LayerLayout, title: str | None = None) -> go.Figure:
    """A flow chart of one encoder layer: LayerNorms, sublayers, "+" nodes and the residual paths."""
    column = (INPUT, *(Node(step.kind, step.label, step.module) for step in layout.steps), OUTPUT)  # row y = index
    fig = go.Figure()
    for start, join in layout.residual_spans:
        _draw_residual(fig, branch_y=start + 0.5, join_y=join + 1, first=not fig.data)
    for row, node in enumerate(column):
        _draw_node(fig, node, row)
        if row:
            _arrow(fig, row - 1, row, _half_height(column[row - 1]), _half_height(node), ARROW, 1.5)
    _draw_after_last_layer(fig, layout.final_layernorm, row=len(column))
    _add_hover(fig, column)
    axis = dict(visible=False, fixedrange=True)
    fig.update_xaxes(range=[-1, 1], **axis)
    fig.update_yaxes(range=[-0.5, len(column) + 0.5], **axis)  # one spare row on top for the final LayerNorm
    fig.update_layout(
        showlegend=True,
        legend=dict(x=1, xanchor="right", y=0, yanchor="bottom", bgcolor="rgba(255,255,255,0.8)"),
        hovermode="closest",
        dragmode=False,
    )
    finish(fig, plot_label(title) if title is not None else f"One encoder layer: {layout.architecture}", height=HEIGHT)
    fig.update_layout(margin=MARGIN)
    return fig


def _half_height(node: Node) -> int:
    return ADD_RADIUS if node.kind == "add" else BOX_HALF_HEIGHT


def _draw_node(fig: go.Figure, node: Node, row: float, name: str | None = None, dash: str = "solid") -> None:
    """A box (or, for an add, a circle) centred on the column at `row`, labelled with the node.

    The shape is named after the node's kind unless `name` says otherwise, so callers can find e.g. the
    LayerNorm boxes.
    """
    fill, border = COLOURS[node.kind]
    half_width = ADD_RADIUS if node.kind == "add" else BOX_HALF_WIDTH
    half_height = _half_height(node)
    fig.add_shape(
        type="circle" if node.kind == "add" else "rect",
        name=name or node.kind,
        xsizemode="pixel",
        ysizemode="pixel",
        xanchor=0,
        yanchor=row,
        x0=-half_width,
        x1=half_width,
        y0=-half_height,
        y1=half_height,
        fillcolor=fill,
        line=dict(color=border, width=2 if node.kind == "add" else 1.5, dash=dash),
        layer="above",  # over the residual line, which ends under the "+" node
    )
    text = "+" if node.kind == "add" else node.label
    fig.add_annotation(x=0, y=row, text=text, showarrow=False, font=dict(size=16 if node.kind == "add" else 12))


def _arrow(
    fig: go.Figure,
    tail_y: float,
    head_y: float,
    tail_gap: int,
    head_gap: int,
    colour: str,
    width: float,
    tail_x: float = 0,
) -> None:
    """An arrow from (tail_x, tail_y) to (0, head_y); the gaps (pixels) make it start and end at node edges."""
    fig.add_annotation(
        x=0,
        y=head_y,
        ax=tail_x,
        ay=tail_y,
        axref="x",
        ayref="y",
        text="",
        showarrow=True,
        arrowhead=2,
        arrowsize=1,
        arrowwidth=width,
        arrowcolor=colour,
        standoff=head_gap,
        startstandoff=tail_gap,
    )


def _draw_residual(fig: go.Figure, branch_y: float, join_y: float, first: bool) -> None:
    """The skip connection: off the column at `branch_y`, up the right side, into the "+" at `join_y`."""
    fig.add_trace(
        go.Scatter(
            x=[0, RESIDUAL_X, RESIDUAL_X, 0],
            y=[branch_y, branch_y, join_y, join_y],
            mode="lines+markers",
            marker=dict(size=[9, 0, 0, 0], color=RESIDUAL),
            line=dict(color=RESIDUAL, width=5),
            name="residual connection",
            legendgroup="residual",
            showlegend=first,
            hoverinfo="text",
            hovertext="residual connection: the stream bypasses the sublayer and is added back at +",
        )
    )
    # The arrowhead where the skip re-joins, on top of the line's last segment.
    _arrow(fig, join_y, join_y, 0, ADD_RADIUS, RESIDUAL, 2.5, tail_x=RESIDUAL_X / 2)


def _draw_after_last_layer(fig: go.Figure, final_layernorm: bool, row: int) -> None:
    """Above the output: the final LayerNorm if the model has one (dashed, it is not part of the layer)."""
    if final_layernorm:
        _draw_node(fig, Node("layernorm", FINAL_LAYERNORM, "LayerNorm"), row, name="ln_final", dash="dash")
        _arrow(fig, row - 1, row, BOX_HALF_HEIGHT, BOX_HALF_HEIGHT, ARROW, 1)
        fig.add_annotation(x=RESIDUAL_X, y=row, text=AFTER_LAST_ONLY, showarrow=False, font=NOTE_FONT)
    else:
        fig.add_annotation(x=0, y=row, text=NO_FINAL_LAYERNORM, showarrow=False, font=NOTE_FONT)


def _add_hover(fig: go.Figure, column: tuple[Node, ...]) -> None:
    """Invisible markers on the nodes, since shapes cannot carry hover text."""
    texts = [f"{node.label}: {HOVER[node.kind]}" + (f" (layer.{node.module})" if node.module else "") for node in column]
    fig.add_trace(
        go.Scatter(
            x=[0] * len(column),
            y=list(range(len(column))),
            mode="markers",
            marker=dict(size=24, opacity=0),
            hoverinfo="text",
            hovertext=texts,
            showlegend=False,
        )
    )
