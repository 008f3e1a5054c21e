"""Switching off LayerNorm outlier dimensions: the experiment of Kovaleva et al. 2021 ("BERT Busters"), on one text.

A few hidden dimensions have unusually large LayerNorm γ and β in most layers of BERT-like models. Kovaleva et al.
zeroed those weights in every LayerNorm of the encoder and the models broke, while zeroing as many randomly chosen
dimensions did little. Here the shared outlier dimensions of the loaded model (flagged in at least half its
LayerNorms, `analysis.outlier_dimensions_across_layers`) are switched off in every LayerNorm of the encoder, and,
as a control, so are random sets of as many other dimensions; each mask's prediction is compared with the intact
model's. The MLM head's own LayerNorm is left alone, as Kovaleva et al. left the heads alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from . import analysis
from .checks import MAX_SEED, whole_number
from .errors import RplnError
from .load import LoadedModel
from .reductions import kl_divergence
from .tasks.fill_mask import FillMaskResult, fill_mask

INTACT = "intact"
OUTLIERS_OFF = "outlier dims off"
MAX_CONTROLS = 10


@contextmanager
def layernorm_dims_off(loaded: LoadedModel, dims: Sequence[int]) -> Iterator[None]:
    """Inside the block every LayerNorm of the encoder outputs 0 in `dims`, as if its γ and β there were 0.

    The hooks sit on the loaded model itself, so the block holds the model's lock: passes from other threads wait
    until it ends instead of being changed by it."""
    hidden = loaded.model.config.hidden_size
    if any(not 0 <= dim < hidden for dim in dims):
        raise RplnError(f"Dimensions must lie between 0 and {hidden - 1} for '{loaded.name}'.")
    index = torch.tensor(sorted(set(dims)), dtype=torch.long)

    def zero_dims(module, args, output: Tensor) -> None:
        output[..., index.to(output.device)] = 0  # in place: the tensor the next module reads

    with loaded.lock:
        handles = [m.register_forward_hook(zero_dims) for m in loaded.body.modules() if isinstance(m, nn.LayerNorm)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


@dataclass
class AblationRun:
    """The model's predictions at every mask with one set of dimensions switched off (none for the intact run)."""

    condition: str  # INTACT, OUTLIERS_OFF or "random dims off #i"
    dims: list[int]
    predictions: list[list[str]]  # [masks][k] the top-k tokens
    intact_top_probability: list[float]  # [masks] the probability this run gives the intact model's top token
    kl_from_intact: list[float]  # [masks] KL(intact ‖ this run) in nats: how far the whole distribution moved


@dataclass
class OutlierAblation:
    """The intact model, the model without its shared outlier dimensions, and random controls, on one text."""

    model_name: str
    architecture: str
    text: str
    threshold: float  # in standard deviations of γ or β, as analysis.outlier_dims
    intact_top: list[str]  # [masks] the intact model's top prediction
    runs: list[AblationRun]  # intact, outlier dims off, then the random controls
    notices: list[str] = field(default_factory=list)

    def run(self, condition: str) -> AblationRun:
        return next(run for run in self.runs if run.condition == condition)

    @property
    def controls(self) -> list[AblationRun]:
        return [run for run in self.runs if run.condition not in (INTACT, OUTLIERS_OFF)]

    def to_rows(self) -> list[dict]:
        """One row per run and mask, for a CSV: what was switched off and what the model then predicted."""
        return [
            {
                "model": self.model_name,
                "condition": run.condition,
                "dims": " ".join(map(str, run.dims)),
                "mask": mask + 1,
                "top": run.predictions[mask][0],
                "intact_top": self.intact_top[mask],
                "intact_top_probability": run.intact_top_probability[mask],
                "kl_from_intact": run.kl_from_intact[mask],
            }
            for run in self.runs
            for mask in range(len(self.intact_top))
        ]

    def to_dict(self) -> dict:
        return asdict(self)


def parse_dims(text: str) -> list[int] | None:
    """Dimensions typed as whole numbers separated by commas or spaces; None for an empty text (the default)."""
    words = text.replace(",", " ").split()
    if not all(word.isdigit() for word in words):
        raise RplnError(f"Dimensions are whole numbers separated by commas or spaces, such as '128, 225'; got {text!r}.")
    return [int(word) for word in words] or None


def outlier_ablation(
    loaded: LoadedModel,
    text: str,
    *,
    dims: Sequence[int] | None = None,
    threshold: float = 3.0,
    controls: int = 3,
    seed: int = 0,
    top_k: int = 5,
) -> OutlierAblation:
    """Switch off `dims` (default: the model's shared outlier dimensions) in every LayerNorm, then random controls."""
    controls = whole_number(controls, "The number of random controls", 1, MAX_CONTROLS)
    seed = whole_number(seed, "Seed", 0, MAX_SEED)
    intact = fill_mask(loaded, text, top_k=top_k)
    if dims is None:
        dims = analysis.outlier_dimensions_across_layers(intact.trace, threshold)
        if not dims:
            raise RplnError(
                f"No dimension of '{loaded.name}' is an outlier (beyond {threshold:g} standard deviations of γ or β) "
                "in at least half of its LayerNorms, so there is nothing to switch off."
            )
    dims = sorted(set(int(dim) for dim in dims))
    hidden = loaded.model.config.hidden_size
    if not dims or len(dims) * 2 > hidden:
        raise RplnError(f"Switch off between 1 and {hidden // 2} dimensions, so random controls can differ from them.")

    reference = intact.probabilities  # [masks, vocab]
    top_ids = reference.argmax(dim=-1)
    generator = torch.Generator().manual_seed(seed)
    switched = set(dims)
    others = torch.tensor([d for d in range(hidden) if d not in switched])
    conditions = [(OUTLIERS_OFF, dims)] + [
        (f"random dims off #{i + 1}", sorted(others[torch.randperm(len(others), generator=generator)[: len(dims)]].tolist()))
        for i in range(controls)
    ]
    runs = [_run(INTACT, [], intact, top_ids, reference)]
    for condition, switched_off in conditions:
        with layernorm_dims_off(loaded, switched_off):
            result = fill_mask(loaded, text, top_k=top_k)
        runs.append(_run(condition, switched_off, result, top_ids, reference))
    return OutlierAblation(
        model_name=loaded.name,
        architecture=loaded.architecture,
        text=intact.text,
        threshold=threshold,
        intact_top=[row[0].token_str for row in intact.predictions],
        runs=runs,
        notices=list(intact.notices),
    )


def _run(condition: str, dims: list[int], result: FillMaskResult, top_ids: Tensor, reference: Tensor) -> AblationRun:
    probs = result.probabilities  # [masks, vocab]
    return AblationRun(
        condition=condition,
        dims=dims,
        predictions=[[p.token_str for p in row] for row in result.predictions],
        intact_top_probability=probs.gather(1, top_ids[:, None]).squeeze(1).tolist(),
        kl_from_intact=kl_divergence(reference, probs).tolist(),
    )
