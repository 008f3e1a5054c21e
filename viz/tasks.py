"""The task outputs themselves: fill-mask candidates, label scores, QA logits and the highlighted answer."""

from __future__ import annotations

import html

import plotly.graph_objects as go

from rpln_core.tasks.classify import ClassificationResult
from rpln_core.tasks.fill_mask import FillMaskResult
from rpln_core.tasks.qa import QAResult

from .layout import check_index, finish, index_ticks, sig4
from .text import plot_label, token_label

CONTEXT = 1  # QA puts the question first, so context tokens are segment 1
MAX_TICK_LABELS = 80  # beyond this a label per token overlaps; the hover still names every token


def ranked_bars(labels: list[str], scores: list[float], title: str, axis: str) -> go.Figure:
    """Horizontal bars, best at the top; `labels` already escaped, and free to repeat."""
    rows = list(range(len(labels)))
    fig = go.Figure(
        go.Bar(
            x=sig4(scores),
            y=rows,
            orientation="h",
            customdata=labels,
            text=[f"{score:.3f}" for score in scores],
            # Outside the bar: inside a short bar plotly turned the number on its side.
            textposition="outside",
            cliponaxis=False,
            marker_color="#4a7fb5",
            hovertemplate="%{customdata}: %{x:.4f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", **index_ticks(labels))
    fig.update_xaxes(title=axis)
    if scores and min(scores) >= 0:  # room right of the longest bar for its number
        fig.update_xaxes(range=[0, max(scores) * 1.15 or 1])
    return finish(fig, title, height=max(300, 28 * len(labels) + 120))


def fill_mask_figure(result: FillMaskResult, mask: int | None = 0) -> go.Figure:
    """Top-k candidates for the `mask`-th mask (every mask, labelled by number, for None) as probability bars."""
    masks = range(len(result.predictions)) if mask is None else [check_index(mask, len(result.predictions), "Mask")]
    labels, scores = [], []
    for index in masks:
        for prediction in result.predictions[index]:
            prefix = f"{index + 1}: " if mask is None and len(result.predictions) > 1 else ""
            labels.append(prefix + token_label(prediction.token_str))
            scores.append(prediction.score)
    if len(masks) == 1:
        position = result.mask_positions[masks[0]]
        title = f"Mask {masks[0] + 1} (token {position}): top {len(labels)} predictions"
    else:
        title = f"Top {len(result.predictions[0])} predictions for each of {len(masks)} masks"
    return ranked_bars(labels, scores, title, "probability")


def classification_figure(result: ClassificationResult) -> go.Figure:
    """Every label's score, best first."""
    labels = [plot_label(label.label) for label in result.labels]
    axis = {"softmax": "probability", "sigmoid": "probability (independent per label)", "none": "score"}
    return ranked_bars(labels, [label.score for label in result.labels], "Label scores", axis[result.function])


def qa_logits_figure(result: QAResult) -> go.Figure:
    """Start and end logits over the context tokens of the traced window, the best answer's tokens shaded."""
    tokens = result.trace.tokens
    context = [i for i, segment in enumerate(tokens.segments) if segment == CONTEXT and not tokens.special[i]]
    labels = [plot_label(tokens.strings[i]) for i in context]
    fig = go.Figure()
    for name, logits in (("start", result.start_logits), ("end", result.end_logits)):
        fig.add_trace(
            go.Scatter(
                x=context,
                y=sig4([logits[i] for i in context]),
                customdata=labels,
                mode="lines+markers",
                name=f"{name} logit",
                hovertemplate=f"token %{{x}}·%{{customdata}}: {name} logit %{{y:.3f}}<extra></extra>",
            )
        )
    best = result.answers[0] if result.answers else None
    if best is not None and best.start_token >= 0 and best.window == result.window:
        fig.add_vrect(
            x0=best.start_token - 0.5,
            x1=best.end_token + 0.5,
            fillcolor="gold",
            opacity=0.3,
            line_width=0,
            annotation_text="best answer",
            annotation_position="top left",
        )
    if len(context) <= MAX_TICK_LABELS:
        fig.update_xaxes(tickvals=context, ticktext=labels, tickangle=-60)
    fig.update_xaxes(title="context token")
    fig.update_yaxes(title="logit")
    fig.update_layout(legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    title = f"Start and end logits over the context (window {result.window + 1} of {result.windows})"
    return finish(fig, title)


def qa_highlight_html(result: QAResult, context: str | None = None) -> str:
    """The context as escaped HTML with the best answer in <mark>, located by its character offsets.

    QAResult does not keep the context text, so pass it as `context` unless the result carries a
    `context` attribute.
    """
    context = context if context is not None else getattr(result, "context", None)
    if context is None:
        raise ValueError("qa_highlight_html needs the context text: pass context=…")
    best = result.answers[0] if result.answers else None
    style = "white-space: pre-wrap; line-height: 1.6"
    if best is None or best.start_token < 0 or best.end <= best.start:
        note = '<p class="qa-note">The model found no answer in the context.</p>'
        return f'{note}<div class="qa-context" style="{style}">{html.escape(context)}</div>'
    before, span, after = context[: best.start], context[best.start : best.end], context[best.end :]
    mark = f'<mark title="score {best.score:.3f}">{html.escape(span)}</mark>'
    return f'<div class="qa-context" style="{style}">{html.escape(before)}{mark}{html.escape(after)}</div>'
