"""What every task does around its head: require the head, encode, run the captured pass."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ..capture import Capture, CaptureOptions, Trace, run_body
from ..errors import RplnError
from ..load import LoadedModel
from ..tokens import Encoded

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
        raise RplnError(f"'{loaded.name}' has an untrained {task} head (its weights are not in the checkpoint).")


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

    Holds the model's lock throughout: the logit lens in `trace()` runs the LM head again, which another
    request's hooks must not see."""
    with loaded.lock:
        with Capture(loaded, options, lens_positions) as capture:
            output = head(run_body(loaded, encoded.inputs))
        return output, capture.trace(encoded.tokens, encoded.notices)
