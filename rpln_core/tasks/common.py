"""What every task does around its head: require the head, encode, run the captured pass, add notices."""

from __future__ import annotations

import functools
from typing import Callable, Sequence, TypeVar

import torch
from torch import Tensor

from ..capture import Capture, CaptureOptions, Trace, run_body
from ..catalog import model_card
from ..errors import RplnError
from ..load import TASK_FUNCTIONS, TASK_HEAD_MODULES, TASK_WORDS, LoadedModel, Task
from ..tokens import Encoded, Tokens

TaskFunction = TypeVar("TaskFunction", bound=Callable)


def one_call_at_a_time(task: TaskFunction) -> TaskFunction:
    """Hold the model's lock (re-entrant) for the whole task call, not only its passes.

    Locking the passes alone kept hooks apart, yet once in some ten thread-test runs a result differed from the
    same input's result alone in the last bits: a call's own tensor work (softmax, top-k) then ran beside another
    call's pass, competing for the same intra-op threads (likely how the products were split). Whole calls in turn
    leave nothing of one call running beside another's pass on the same model."""

    @functools.wraps(task)
    def wrapper(loaded: LoadedModel, *args, **kwargs):
        with loaded.lock:
            return task(loaded, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def require_head(loaded: LoadedModel, task: Task) -> None:
    """Refuse to present the output of another task's head, or of a missing or randomly initialised one, as a
    prediction for `task`.

    By the checkpoint's task, not by attribute: a token classifier's `classifier` is no sequence classifier, and a
    causal LM's `lm_head` never learned to fill masks."""
    words = TASK_WORDS[task]
    if loaded.task != task:
        own = TASK_FUNCTIONS.get(loaded.task)
        hint = f" This one is for {TASK_WORDS[loaded.task]}: run it with {own}." if own else ""
        raise RplnError(
            f"'{loaded.name}' is a {TASK_WORDS[loaded.task]} checkpoint with no {words} head; "
            f"choose a checkpoint trained for {words}.{hint}"
        )
    if not loaded.has_trained_head(task):
        untrained = " and ".join(h for h in TASK_HEAD_MODULES[task] if not loaded.head_is_trained(h))
        raise RplnError(
            f"'{loaded.name}' has an untrained {words} head: the checkpoint's encoder is complete, but the weights "
            f"of its {untrained} are not in it, so its {words} output would be random. Choose a checkpoint saved "
            f"with a trained {words} head."
        )


@torch.no_grad()
def captured_pass(
    loaded: LoadedModel,
    encoded: Encoded,
    head: Callable[[Tensor], Tensor],
    *,
    lens_positions: Sequence[int] = (),
    options: CaptureOptions | None = None,
) -> tuple[Tensor, Trace]:
    """Run the encoder and `head` (sequence output -> head output) once, recording the trace.

    The trace's notices are the encoding's, then `input_notices`, then the capture's own. Holds the model's lock
    throughout: the logit lens in `trace()` runs the LM head again, which another request's hooks must not see."""
    notices = list(encoded.notices) + input_notices(loaded, len(encoded.tokens))
    with loaded.lock:
        with Capture(loaded, options, lens_positions) as capture:
            output = head(run_body(loaded, encoded.inputs))
        return output, capture.trace(encoded.tokens, notices)


def input_notices(loaded: LoadedModel, tokens: int) -> list[str]:
    """What a reader should know about running `loaded` on `tokens` tokens: e.g. more than it was trained on.

    Never a refusal: the model can read up to `loaded.max_tokens`, it just never learned the positions past
    its training length (an efficient_mlm model has 514 position embeddings and learned 128 of them)."""
    card = model_card(loaded.name)
    notice = card.length_notice(tokens) if card is not None else None
    return list(loaded.notices) + ([notice] if notice else [])


def first_tokens(tokens: Tokens, length: int) -> Tokens:
    """The first `length` tokens of `tokens` (e.g. a window without its padding), every column cut alike."""
    columns = ("ids", "strings", "offsets", "special", "segments")
    return Tokens(*(getattr(tokens, column)[:length] for column in columns))
