"""What every task does around its head: require the head, encode, run the captured pass, add notices."""

from __future__ import annotations

import functools
from typing import Callable, Sequence, TypeVar

import torch
from torch import Tensor

from ..capture import Capture, CaptureOptions, Trace, run_body
from ..catalog import model_card
from ..errors import RplnError
from ..load import LoadedModel
from ..tokens import Encoded

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


HEAD_TASKS = {"lm_head": "fill-mask", "classifier": "classification", "qa_outputs": "question answering"}


def require_head(loaded: LoadedModel, head: str) -> None:
    """Refuse to present a missing or randomly initialised head's output as a prediction."""
    task = HEAD_TASKS[head]
    if getattr(loaded.model, head, None) is None:
        raise RplnError(
            f"'{loaded.name}' is a {loaded.task} checkpoint with no {task} head; "
            f"choose a checkpoint trained for {task}."
        )
    if not loaded.head_is_trained(head):
        raise RplnError(
            f"'{loaded.name}' has an untrained {task} head: the checkpoint's encoder is complete, but the weights "
            f"of its {head} are not in it, so its {task} output would be random. Choose a checkpoint saved with a "
            f"trained {task} head."
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
    return [notice] if notice else []
