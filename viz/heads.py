"""The outputs of the other heads: tagged text and per-token label scores, the choices' scores and the tokens that
differ between them, and generation's per-step candidates and logit lens.

Pure functions of a task result (or a trace): no model runs here. Highlighted text is returned as (text, label)
pairs for gr.HighlightedText, which shows text as text, never as HTML; figure strings pass through `plot_label`.
"""

from __future__ import annotations

import math
from typing import Sequence

import plotly.graph_objects as go

from rpln_core.capture import Trace
from rpln_core.tasks.choice import ChoiceResult
from rpln_core.tasks.generate import GenerationStep
from rpln_core.tasks.tag import TagResult

from .layout import finish, sig4
from .lens import LOWEST_LOG10_P, lens_figure, token_probability_heatmap
from .tasks import ranked_bars
from .text import plot_label, token_label, token_labels, visible_token

Spans = list[tuple[str, str | None]]  # gr.HighlightedText's value: text pieces in order, each with its label or None

DIFFERS = "differs"  # the label of the tokens a choice does not share with the others
GENERATED = "generated"
CHOICE_LABEL_CHARS = 48  # a choice's bar label; the full text is in the table beside the chart
MOST_LABEL_ROWS = 40  # past this many labels a row each would make the token chart taller than a screen
MOST_CELL_TEXTS = 32  # steps whose candidates a full-width chart can write in its cells


def tag_spans(result: TagResult) -> Spans:
    """The tagged text: every entity's exact characters (text[start:end]) with its label, the text between as is."""
    spans: Spans = []
    end = 0
    for entity in sorted(result.entities, key=lambda e: e.start):
        if entity.start < end or entity.start == entity.end:  # overlapping (never, in the pipeline's rows) or empty
            continue
        if entity.start > end:
            spans.append((result.text[end : entity.start], None))
        spans.append((result.text[entity.start : entity.end], entity.label))
        end = entity.end
    if end < len(result.text):
        spans.append((result.text[end:], None))
    return spans


def token_scores_figure(result: TagResult) -> go.Figure:
    """Each token's probability for every label (labels × tokens), the specials included, as the head scored them."""
    scores = result.token_scores.float().T  # [labels, tokens]
    labels = [plot_label(label) for label in result.labels]
    tokens = token_labels(result.trace)
    fig = go.Figure(
        go.Heatmap(
            z=sig4(scores),
            x=tokens,
            y=labels,
            zmin=0,
            zmax=1,
            colorscale="Blues",
            colorbar=dict(title=dict(text="p"), thickness=12),
            hovertemplate="token %{x}: %{y} p = %{z:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", title="token", tickangle=-60)
    fig.update_yaxes(type="category", title="label", autorange="reversed", automargin=True)
    rows = min(len(labels), MOST_LABEL_ROWS)
    return finish(fig, "Probability of each label at each token", height=max(300, 18 * rows + 160))


def choice_figure(result: ChoiceResult) -> go.Figure:
    """Every choice's probability (the softmax over the choices' logits), in the order given, numbered from 1."""
    labels = [f"{number}: {plot_label(shorten(choice.choice, CHOICE_LABEL_CHARS))}"
              for number, choice in enumerate(result.choices, start=1)]
    return ranked_bars(labels, [choice.score for choice in result.choices], "Score of each choice", "probability")


def shorten(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def differing_spans(trace: Trace, differing: Sequence[int], texts: Sequence[str]) -> Spans:
    """One choice's input as the model read it ("<s> context </s></s> choice </s>"), with the tokens that not every
    choice shares labelled DIFFERS. `texts`: the segments' texts (context, choice), which the offsets index."""
    tokens, marked = trace.tokens, set(differing)
    spans: Spans = []
    previous: tuple[int | None, int] = (None, 0)  # (segment, end) of the token before
    for position, (string, (start, end), segment) in enumerate(zip(tokens.strings, tokens.offsets, tokens.segments)):
        if segment is None:  # a special token: its name, set apart by spaces
            spans.append((f" {string} ", None))
        else:
            text = texts[segment]
            label = DIFFERS if position in marked else None
            if previous[0] == segment and start > previous[1]:  # the spaces between two tokens: marked inside a run
                spans.append((text[previous[1] : start], label if position - 1 in marked else None))
            spans.append((text[start:end], label))
        previous = (segment, end)
    return spans


def generation_spans(prompt: str, generated: str) -> Spans:
    """The prompt, then what the model added to it, labelled GENERATED."""
    return [(prompt, None)] + ([(generated, GENERATED)] if generated else [])


def candidates_figure(steps: list[GenerationStep]) -> go.Figure:
    """The model's most probable next tokens at each step (rank × step), each cell shaded by log10 of its
    probability and naming its token; the token the step chose is outlined when it is among them."""
    ranks = max((len(step.candidates) for step in steps), default=0)
    cells = [[step.candidates[rank] if rank < len(step.candidates) else None for step in steps]
             for rank in range(ranks)]
    probs = [[c.probability if c else math.nan for c in row] for row in cells]  # [ranks, steps]
    text = [[token_label(c.token_str) if c else "" for c in row] for row in cells]
    z = [[_log10_p(p) for p in row] for row in probs]
    columns = [f"{number}·{token_label(step.token_str)}" for number, step in enumerate(steps, start=1)]
    rows = [str(rank + 1) for rank in range(ranks)]
    low = max(LOWEST_LOG10_P, math.floor(min([v for row in z for v in row if not math.isnan(v)] + [0.0])))
    fig = go.Figure(
        token_probability_heatmap(
            sig4(z) if steps else [], sig4(probs) if steps else [], x=columns, y=rows, text=text, low=low,
            # Past MOST_CELL_TEXTS steps a cell is too narrow for its token: the hover still names it.
            texttemplate="%{text}" if len(steps) <= MOST_CELL_TEXTS else "",
            hovertemplate="step %{x}, rank %{y}: %{text} (p = %{customdata:.3g})<extra></extra>",
        )
    )
    for column, rank in enumerate(map(rank_of, steps)):  # an outline sized to its cell, however many steps
        if rank is not None:
            fig.add_shape(type="rect", x0=column - 0.5, x1=column + 0.5, y0=rank - 0.5, y1=rank + 0.5,
                          line=dict(color="#d62728", width=2))
    fig.update_xaxes(type="category", title="step · the token it chose", tickangle=-45)
    fig.update_yaxes(type="category", title="rank", autorange="reversed")
    title = f"The model's top {ranks} next tokens at each step (outlined: the one it took)"
    finish(fig, title, height=max(300, 40 * ranks + 200))
    return fig.update_layout(margin=dict(b=110))  # room for the slanted step labels


def rank_of(step: GenerationStep) -> int | None:
    """The rank (0-based) of the chosen token among the step's candidates; None when sampling went past them."""
    return next((rank for rank, candidate in enumerate(step.candidates) if candidate.token == step.token), None)


def _log10_p(probability: float) -> float:
    """log10 of a probability for the colour, floored at LOWEST_LOG10_P; NaN (no candidate) stays NaN."""
    if math.isnan(probability):
        return probability
    return max(LOWEST_LOG10_P, math.log10(probability)) if probability > 0 else LOWEST_LOG10_P


def step_rows(steps: list[GenerationStep]) -> list[dict]:
    """A row per step for a table: the token chosen, its probability and the top candidates (tokens visible, not
    escaped: a table cell shows text as text)."""
    return [
        {
            "step": number,
            "token": visible_token(step.token_str),
            "probability": step.probability,
            "candidates": " · ".join(f"{visible_token(c.token_str)} {c.probability:.3f}" for c in step.candidates),
        }
        for number, step in enumerate(steps, start=1)
    ]


def step_lens_figure(trace: Trace, step: int) -> go.Figure | None:
    """The logit lens at the position whose output chose the `step`-th generated token (0-based): what each
    stream would have predicted there. None when the trace has no lens."""
    fig = lens_figure(trace, mask=step)
    if fig is None:
        return None
    position = trace.logit_lens.positions[step]
    where = token_label(trace.tokens.strings[position])
    chose = token_label(trace.tokens.strings[position + 1].strip()) if position + 1 < len(trace.tokens) else "?"
    # Below the chart's label in the page (the lens puts its rank axis on top, so its title sits higher).
    fig.update_layout(title=dict(text=f"Step {step + 1}: what each stream at token {position}·{where} predicts next "
                                      f"(the model chose {chose})", y=1 - 34 / fig.layout.height),
                      margin=dict(t=120))
    return fig
