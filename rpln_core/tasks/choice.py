"""Multiple choice (SWAG- or RACE-style): a context, 2 to 8 choices, a score per choice and a traced pass for each.

The head reads each "<s> context </s></s> choice </s>" on its own (a choice's logit never sees the other choices)
and is trained with a softmax over the choices, so the scores are that softmax. No pipeline exists for this task:
the tests compare with the model's own forward on the batched [1, choices, tokens] input it is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .. import budgets
from ..capture import CaptureOptions, Trace
from ..errors import RplnError
from ..load import LoadedModel
from ..tokens import check_text, encode
from .common import captured_pass, one_call_at_a_time, require_head

MIN_CHOICES = 2  # one choice has nothing to be compared with: its softmax is always 1


@dataclass
class ChoiceScore:
    choice: str
    score: float  # softmax over the choices of the head's logits
    logit: float


@dataclass
class ChoiceResult:
    """Every choice's score in the order given, and the trace of each choice's own pass."""

    context: str
    choices: list[ChoiceScore]  # in the order given
    best: int  # index of the highest-scoring choice (the first of equals)
    traces: list[Trace]  # one per choice, in the order given: the pass over "<s> context </s></s> choice </s>"
    # Per choice: the positions of its trace's tokens that not every choice shares (all but the longest common
    # start and end of the token sequences): where the passes can first differ.
    differing: list[list[int]]
    notices: list[str] = field(default_factory=list)

    @property
    def trace(self) -> Trace:
        """The best choice's trace (every choice's is in `traces`)."""
        return self.traces[self.best]

    def ranked(self) -> list[ChoiceScore]:
        """The choices best first."""
        return sorted(self.choices, key=lambda choice: choice.score, reverse=True)

    def to_dicts(self) -> list[dict]:
        """Plain rows in the order given: choice, score, logit."""
        return [{"choice": c.choice, "score": c.score, "logit": c.logit} for c in self.choices]


@one_call_at_a_time
def choose(
    loaded: LoadedModel, context: str, choices: Sequence[str], *, options: CaptureOptions | None = None
) -> ChoiceResult:
    """Score each of `choices` as a continuation of (or answer to) `context` with the checkpoint's trained head.

    Each choice runs as its own traced pass, unpadded; a pair longer than the model reads is cut, with a notice."""
    require_head(loaded, "multiple-choice")
    check_text(context, "context")
    choices = check_choices(choices)
    logits, traces = [], []
    for choice in choices:
        encoded = encode(loaded.tokenizer, context, choice, max_tokens=loaded.max_tokens)
        # The dropout the model applies before the classifier is the identity in eval mode.
        logit, trace = captured_pass(
            loaded, encoded, lambda hidden: loaded.classifier(loaded.pooler(hidden))[0, 0], options=options
        )
        logits.append(logit.float())
        traces.append(trace)
    logits = torch.stack(logits).cpu()  # [choices]
    scores = logits.softmax(dim=-1)
    rows = [ChoiceScore(text, score, logit) for text, score, logit in zip(choices, scores.tolist(), logits.tolist())]
    notices = list(dict.fromkeys(notice for trace in traces for notice in trace.notices))
    best = int(scores.argmax())
    return ChoiceResult(context, rows, best, traces, differing_positions([t.tokens.ids for t in traces]), notices)


def check_choices(choices) -> list[str]:
    """The choices as a list of texts, from 2 to budgets.max_choices of them, each a readable length."""
    most = budgets.current().max_choices
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise RplnError(f"choices must be a list of {MIN_CHOICES} to {most} texts; got {type(choices).__name__}.")
    if not MIN_CHOICES <= len(choices) <= most:
        raise RplnError(f"choices must be a list of {MIN_CHOICES} to {most} texts; got {len(choices)}.")
    return [check_text(choice, f"choice {number}") for number, choice in enumerate(choices, start=1)]


def differing_positions(sequences: list[list[int]]) -> list[list[int]]:
    """For each token sequence, the positions outside the longest start and end that every sequence shares."""
    shortest = min(len(ids) for ids in sequences)
    start = 0
    while start < shortest and len({ids[start] for ids in sequences}) == 1:
        start += 1
    end = 0  # shared tokens at the end, never overlapping the shared start
    while end < shortest - start and len({ids[-1 - end] for ids in sequences}) == 1:
        end += 1
    return [list(range(start, len(ids) - end)) for ids in sequences]
