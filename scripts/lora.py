"""Low-rank adapters for training a small delta: W = W0 + (alpha / rank) · B @ A on the encoder's Linear layers.

Parametrizations keep every module and parameter name as transformers has it, so what is trained maps one-to-one
onto the names rpln_core.deltas stores.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize


class LowRank(nn.Module):
    """The update added to a frozen weight [out, in]: B starts at zero, so training starts from the base."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float):
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear initialises, and as LoRA does
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.B @ self.A)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) with the scale folded into B, as the delta format stores them."""
        return self.A.detach().clone(), (self.scale * self.B).detach().clone()


def add_low_rank(body: nn.Module, prefix: str, rank: int, alpha: float) -> dict[str, LowRank]:
    """Parametrize every Linear weight under `body.encoder.layer`; returns {full parameter name: its LowRank}."""
    added = {}
    for name, module in body.encoder.layer.named_modules():
        if isinstance(module, nn.Linear):
            update = LowRank(module.out_features, module.in_features, rank, alpha)
            parametrize.register_parametrization(module, "weight", update)
            module.parametrizations.weight.original.requires_grad_(False)
            added[f"{prefix}encoder.layer.{name}.weight"] = update
    return added


def merge_low_rank(body: nn.Module) -> None:
    """Fold every update into its weight and drop the parametrizations (names back to plain `.weight`)."""
    for module in body.encoder.layer.modules():
        if isinstance(module, nn.Linear) and parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
