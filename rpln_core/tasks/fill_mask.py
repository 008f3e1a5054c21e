"""Fill-mask with the same fields and scores as transformers' pipeline("fill-mask")."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from .. import budgets
from ..capture import CaptureOptions, Trace
from ..errors import RplnError
from ..load import LoadedModel
from ..tokens import check_text, encode
from .common import captured_pass, one_call_at_a_time, require_head

HABITUAL_MASKS = re.compile(r"\[MASK\]|\[mask\]")  # BERT's spelling, typed by habit


@dataclass
class MaskPrediction:
    score: float
    token: int
    token_str: str
    sequence: str


@dataclass
class FillMaskResult:
    """Top-k predictions for each mask, in text order, and the trace of the pass."""

    predictions: list[list[MaskPrediction]]  # [masks][k]
    mask_positions: list[int]  # token index of each mask in trace.tokens
    text: str  # the text the model read (habitual [MASK] replaced by the model's mask token)
    trace: Trace
    notices: list[str] = field(default_factory=list)
    # [masks, vocab] each mask's whole predicted distribution, before any `targets` restriction: what
    # experiments that change the model compare (rpln_core.ablation).
    probabilities: torch.Tensor | None = None

    def to_pipeline(self) -> list[dict] | list[list[dict]]:
        """The result exactly as pipeline("fill-mask") shapes it: a flat list for one mask."""
        rows = [[asdict(p) for p in row] for row in self.predictions]
        return rows[0] if len(rows) == 1 else rows


@one_call_at_a_time
def fill_mask(
    loaded: LoadedModel,
    text: str,
    *,
    top_k: int = 5,
    targets: str | Sequence[str] | None = None,
    options: CaptureOptions | None = None,
) -> FillMaskResult:
    """Predict every mask in `text`; `targets` restricts the candidates as the pipeline does."""
    require_head(loaded, "mlm")
    tokenizer = loaded.tokenizer
    text, notices = normalise_masks(check_text(text), tokenizer.mask_token)
    if tokenizer.mask_token not in text:
        raise RplnError(f"The text has no mask: put {tokenizer.mask_token} where the model should guess a word.")
    max_masks = budgets.current().max_masks
    if text.count(tokenizer.mask_token) > max_masks:
        raise RplnError(f"The text has {text.count(tokenizer.mask_token)} masks; use at most {max_masks}.")
    top_k = budgets.check_top_k(top_k, "top_k", vocabulary=len(tokenizer))
    encoded = encode(tokenizer, text, max_tokens=loaded.max_tokens)
    input_ids = encoded.inputs["input_ids"][0]
    positions = (input_ids == tokenizer.mask_token_id).nonzero().flatten().tolist()
    if len(positions) < text.count(tokenizer.mask_token):
        raise RplnError(
            f"A mask lies beyond the first {loaded.max_tokens} tokens, which is all this model reads: "
            "shorten the text before it."
        )
    target_ids = target_token_ids(tokenizer, targets) if targets else None

    logits, trace = captured_pass(
        loaded, encoded, lambda hidden: loaded.lm_head(hidden[0, positions]), lens_positions=positions, options=options
    )
    distribution = logits.float().softmax(dim=-1)  # [masks, vocab]
    probs = distribution[:, target_ids] if target_ids is not None else distribution
    values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)

    single_mask = len(positions) == 1
    predictions = []
    for mask, position in enumerate(positions):
        row = []
        for score, index in zip(values[mask].tolist(), indices[mask].tolist()):
            token = target_ids[index] if target_ids is not None else index
            filled = input_ids.clone()
            filled[position] = token
            filled = filled[filled != tokenizer.pad_token_id]
            # Like the pipeline: other masks stay visible when there are several.
            sequence = tokenizer.decode(filled, skip_special_tokens=single_mask)
            row.append(MaskPrediction(score, token, tokenizer.decode([token]), sequence))
        predictions.append(row)
    # The trace's notices hold the encoding's, the model's (e.g. past its trained length) and the capture's.
    return FillMaskResult(predictions, positions, text, trace, notices + trace.notices, distribution)


def normalise_masks(text: str, mask_token: str) -> tuple[str, list[str]]:
    """Read a habitual [MASK] as the model's own mask token, and say so."""
    if HABITUAL_MASKS.search(text) and mask_token != "[MASK]":
        return HABITUAL_MASKS.sub(mask_token, text), [f"[MASK] was read as this model's mask token {mask_token}."]
    return text, []


def target_token_ids(tokenizer, targets: str | Sequence[str]) -> list[int]:
    """Token ids for `targets`, as the pipeline picks them: the vocabulary entry, else the first sub-token."""
    if isinstance(targets, str):
        targets = [targets]
    vocab = tokenizer.get_vocab()
    ids = []
    for target in targets:
        token_id = vocab.get(target)
        if token_id is None:
            pieces = tokenizer(target, add_special_tokens=False, max_length=1, truncation=True)["input_ids"]
            if not pieces:
                continue
            token_id = pieces[0]
        ids.append(token_id)
    ids = sorted(set(ids))
    if not ids:
        raise RplnError("None of the targets is a token this model knows.")
    return ids
