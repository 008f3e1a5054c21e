"""Pre-LN versus post-LN at initialisation: gradient norms and residual-stream norms of fresh models.

Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture" (ICML), explain why
post-LN Transformers need a learning-rate warm-up and pre-LN ones do not:

- Theorem 1: at initialisation, the gradient of the last layer's weights does not shrink with depth
  L for post-LN, while for pre-LN it scales like 1/sqrt(L).
- Lemma 2: in post-LN, what each LayerNorm receives (the stream plus a sublayer's output) has the same
  expected squared norm, 3d/2, at every layer, and the stream between layers is that LayerNorm's output,
  of norm about sqrt(d); pre-LN's stream grows linearly, (1 + l/2)d <= E||x_l||^2 <= (1 + 3l/2)d.

What to expect here: the last layer's gradient norm of a pre-LN model falls as the model gets deeper
and a post-LN model's stays about level; pre-LN's residual norm rises layer by layer and post-LN's is
flat. The paper's statements are for its idealised initialisation (Xavier weights, no attention
mixing at init); these experiments use HF's default init (normal with std `init_std`), so the sign
of the effects holds but the per-layer shape of the gradient norms depends on `init_std`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from . import synthetic
from .capture import CaptureOptions
from .load import LoadedModel, random_model
from .init_std import REFERENCE_STD, REFERENCE_WIDTH, matched_init_std  # noqa: F401 - re-exported
from .synthetic import Architecture
from .tasks.common import captured_pass
from .tokens import encode

# About 70 tokens with the built-in tokenizer: enough masked positions for a stable loss, fast on CPU.
DEFAULT_TEXT = " ".join(synthetic.SAMPLE_TEXT[:4])
# RoBERTa's position table, fixed so a longer text does not change the random draws of other weights.
MAX_POSITIONS = 514
DEFAULT_DEPTHS = (3, 6, 12, 24)
@dataclass
class GradientsAtInit:
    """Gradient norms of one freshly initialised MLM after one masked-LM loss, backward."""

    architecture: str  # "pre-ln" or "post-ln"
    depth: int
    width: int
    init_std: float
    seed: int
    layer_grad_norms: list[float]  # [depth] Frobenius norm of d loss / d encoder.layer.{l}.output.dense.weight
    last_layer_grad_norm: float  # layer_grad_norms[-1], the quantity of Xiong et al.'s Theorem 1
    loss: float


@dataclass
class ResidualNormsAtInit:
    """Mean residual-stream norm entering each layer of a fresh model, and the Lemma 2 reference."""

    architecture: str
    depth: int
    width: int
    init_std: float
    seed: int
    # [depth + 1] mean over tokens of ||x_l||: the embedding, each later layer's input, the final stream
    mean_norms: list[float]
    # [depth + 1] sqrt of Xiong et al.'s Lemma 2 bounds on E||x_l||^2 at hidden size `width`, in norm
    # units so they share the chart's axis. They hold for the paper's idealised init, not HF's:
    # a reference for comparison, not a prediction of `mean_norms`.
    lemma2_low: list[float]
    lemma2_high: list[float]

    @property
    def growth(self) -> float:
        """Last stream's mean norm over the first's: above 1 when the stream grows with depth."""
        return self.mean_norms[-1] / self.mean_norms[0]


@lru_cache(maxsize=1)
def default_tokenizer() -> PreTrainedTokenizerBase:
    return synthetic.build_tokenizer()


def fresh_mlm(
    architecture: Architecture,
    depth: int,
    *,
    width: int = 256,
    heads: int = 4,
    init_std: float = 0.02,
    tokenizer: PreTrainedTokenizerBase | None = None,
    seed: int = 0,
) -> LoadedModel:
    """A freshly initialised masked-LM (HF's default init, std `init_std`) in eval mode, so no dropout."""
    return random_model(
        architecture,
        "mlm",
        tokenizer or default_tokenizer(),
        seed=seed,
        hidden_size=width,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=init_std,
    )


def mask_tokens(
    input_ids: torch.Tensor, mask_token_id: int, special: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace `fraction` of the non-special tokens by the mask (at least one), chosen by `seed`.

    Returns (masked input ids, labels); labels are -100 except at masked positions, as HF's loss expects.
    """
    candidates = (~special).nonzero().flatten()
    count = max(1, round(fraction * len(candidates)))
    generator = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
    masked, labels = input_ids.clone(), torch.full_like(input_ids, -100)
    labels[chosen] = input_ids[chosen]
    masked[chosen] = mask_token_id
    return masked, labels


def gradients_at_init(
    architecture: Architecture,
    depth: int,
    *,
    width: int = 256,
    heads: int = 4,
    init_std: float = 0.02,
    text: str = DEFAULT_TEXT,
    tokenizer: PreTrainedTokenizerBase | None = None,
    mask_fraction: float = 0.4,
    seed: int = 0,
) -> GradientsAtInit:
    """One MLM loss on `text` (seeded masking) through a fresh model, backward: per-layer FFN-output gradient norms."""
    loaded = fresh_mlm(architecture, depth, width=width, heads=heads, init_std=init_std, tokenizer=tokenizer, seed=seed)
    tok = loaded.tokenizer
    encoded = encode(tok, text, max_tokens=loaded.max_tokens)
    input_ids = encoded.inputs["input_ids"][0]
    special = tok.get_special_tokens_mask(input_ids.tolist(), already_has_special_tokens=True)
    special = torch.tensor(special, dtype=torch.bool)
    masked, labels = mask_tokens(input_ids, tok.mask_token_id, special, mask_fraction, seed)

    model = loaded.model  # eval mode: dropout is off, autograd still records
    loss = model(input_ids=masked[None], attention_mask=encoded.inputs["attention_mask"], labels=labels[None]).loss
    loss.backward()
    layers = loaded.body.encoder.layer
    norms = [layer.output.dense.weight.grad.norm().item() for layer in layers]
    return GradientsAtInit(architecture, depth, width, init_std, seed, norms, norms[-1], loss.item())


def depth_sweep(architecture: Architecture, depths: Sequence[int] = DEFAULT_DEPTHS, **kwargs) -> list[GradientsAtInit]:
    """`gradients_at_init` at each depth, same width, init, text and seed: the x-axis of Theorem 1."""
    return [gradients_at_init(architecture, depth, **kwargs) for depth in depths]


def lemma2_bounds(architecture: Architecture, depth: int, width: int) -> tuple[list[float], list[float]]:
    """sqrt of Xiong et al.'s Lemma 2 bounds on E||x_l||^2, l = 0..depth (l = 0 is the embedding)."""
    if architecture == "post-ln":
        flat = [math.sqrt(1.5 * width)] * (depth + 1)
        return flat, list(flat)
    low = [math.sqrt((1 + l / 2) * width) for l in range(depth + 1)]
    high = [math.sqrt((1 + 3 * l / 2) * width) for l in range(depth + 1)]
    return low, high


def residual_norms_at_init(
    architecture: Architecture,
    depth: int,
    *,
    width: int = 256,
    heads: int = 4,
    init_std: float = 0.02,
    text: str = DEFAULT_TEXT,
    tokenizer: PreTrainedTokenizerBase | None = None,
    seed: int = 0,
) -> ResidualNormsAtInit:
    """Mean residual-stream norm entering each layer, and the final stream, of a fresh model reading `text`."""
    loaded = fresh_mlm(architecture, depth, width=width, heads=heads, init_std=init_std, tokenizer=tokenizer, seed=seed)
    encoded = encode(loaded.tokenizer, text, max_tokens=loaded.max_tokens)
    _, trace = captured_pass(loaded, encoded, lambda hidden: hidden, options=CaptureOptions())
    # resid_post_norm[-1] is the stream before pre-LN's final LayerNorm: the one Lemma 2 speaks of.
    norms = torch.cat([trace.resid_pre_norm, trace.resid_post_norm[-1:]]).mean(dim=1)  # [depth + 1]
    low, high = lemma2_bounds(architecture, depth, width)
    return ResidualNormsAtInit(architecture, depth, width, init_std, seed, norms.tolist(), low, high)
