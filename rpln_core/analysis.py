"""Analyses of one trace: pure functions of a `Trace`, no model calls.

Every statistic is computed in float32, whatever dtype the trace stores. Layer indices are 0-based
as in the trace vocabulary (`blocks.{l}`); "streams" are the residual points embed, then each
layer's output: index s is `resid_pre[s]` for s < layers and `resid_post[-1]` for s = layers.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

import torch
from torch import Tensor

from .capture import LayerNormStats, Trace
from .reductions import lower_median, row_entropy
from .tokens import Tokens

BOS = "<s>"  # RoBERTa's special-token spelling, shared by the Hub checkpoints and our bundled models
EOS = "</s>"


# --- attention -------------------------------------------------------------------------------------


def attention_entropy_per_query(trace: Trace) -> Tensor:
    """[layers, heads, tokens] Shannon entropy (nats) of each query's attention row; 0·log 0 = 0."""
    if trace.attention_entropy is not None:
        # Recorded during the pass from the full-precision weights: exact, and free to reuse, whereas
        # recomputing from stored (float16 or 8-bit) attentions is slower and less precise.
        return trace.attention_entropy
    return row_entropy(trace.attentions)


def attention_entropy(trace: Trace) -> Tensor:
    """[layers, heads] mean over query tokens of the attention-row entropy (nats)."""
    return attention_entropy_per_query(trace).mean(dim=-1)


def attention_rollout(trace: Trace, residual: bool = True) -> Tensor:
    """[layers, tokens, tokens] attention rollout (Abnar & Zuidema 2020): rollout[l] = Â_l ··· Â_0.

    Rows are queries (outputs of layer l), columns the input tokens (embeddings); each row sums to 1.
    Â_l is the head-averaged attention, mixed 0.5/0.5 with the identity when `residual` is set
    (the skip connection carries each token's own stream forward), then renormalised row-wise.
    """
    mixed = trace.attentions.float().mean(dim=1)  # [layers, tokens, tokens]
    if residual:
        mixed = 0.5 * mixed + 0.5 * torch.eye(mixed.shape[-1])
    # Renormalised even without the identity: float16 storage leaves rows a little off 1.
    mixed = mixed / mixed.sum(dim=-1, keepdim=True)
    rollout = [mixed[0]]
    for layer in mixed[1:]:
        rollout.append(layer @ rollout[-1])  # output i of this layer reads input j through every earlier layer
    return torch.stack(rollout)


@dataclass
class SinkShares:
    """Share of attention (mean over query tokens) landing on each kind of sink token."""

    bos: Tensor  # [layers, heads] on <s>
    eos: Tensor  # [layers, heads] on every </s> (a text pair has several)
    punctuation: Tensor  # [layers, heads] on non-special tokens made only of punctuation


def attention_sinks(trace: Trace) -> SinkShares:
    """How much attention goes to <s>, to </s> and to punctuation, per layer and head."""
    tokens = trace.tokens
    bos = [s and text == BOS for s, text in zip(tokens.special, tokens.strings)]
    eos = [s and text == EOS for s, text in zip(tokens.special, tokens.strings)]
    return SinkShares(
        bos=attention_share(trace, bos),
        eos=attention_share(trace, eos),
        punctuation=attention_share(trace, punctuation_tokens(tokens)),
    )


def attention_share(trace: Trace, keys: list[bool]) -> Tensor:
    """[layers, heads] attention mass on the key tokens flagged in `keys`, averaged over queries."""
    mask = torch.tensor(keys, dtype=torch.bool)
    return trace.attentions.float()[..., mask].sum(dim=-1).mean(dim=-1)


def punctuation_tokens(tokens: Tokens) -> list[bool]:
    """Whether each token is a non-special token whose text, spaces aside, is all punctuation (Unicode P*)."""
    return [not special and is_punctuation(text) for text, special in zip(tokens.strings, tokens.special)]


def is_punctuation(text: str) -> bool:
    """Whether `text` holds at least one character and, surrounding spaces aside, only punctuation."""
    stripped = text.strip()
    return bool(stripped) and all(unicodedata.category(char).startswith("P") for char in stripped)


# --- LayerNorm parameters ----------------------------------------------------------------------------


@dataclass
class LayerNormOutliers:
    """Dimensions whose γ or β stand out in one LayerNorm (Kovaleva et al. 2021, "BERT Busters")."""

    name: str  # our vocabulary, e.g. "blocks.3.ln1"
    module: str  # where it lives in transformers
    gamma_dims: list[int]  # ascending
    beta_dims: list[int]
    gamma_z: list[float]  # z-score of each gamma_dims entry, in the same order
    beta_z: list[float]


def z_scores(values: Tensor) -> Tensor:
    """[n] distance of each entry from the vector's mean, in (population) standard deviations; 0 if constant."""
    values = values.float()
    std = values.std(unbiased=False)
    if std == 0:  # γ = 1, β = 0 at initialisation: nothing stands out
        return torch.zeros_like(values)
    return (values - values.mean()) / std


def outlier_dims(values: Tensor, threshold: float) -> tuple[list[int], list[float]]:
    """Indices of entries more than `threshold` standard deviations from the mean, with their z-scores."""
    z = z_scores(values)
    dims = (z.abs() > threshold).nonzero().flatten()
    return dims.tolist(), z[dims].tolist()


def layernorm_outliers(trace: Trace, threshold: float = 3.0) -> list[LayerNormOutliers]:
    """For each LayerNorm in the trace, the γ and β dimensions beyond `threshold` standard deviations."""
    return [_layernorm_outliers(stats, threshold) for stats in trace.layernorms]


def _layernorm_outliers(stats: LayerNormStats, threshold: float) -> LayerNormOutliers:
    gamma_dims, gamma_z = outlier_dims(stats.weight, threshold)
    beta_dims, beta_z = outlier_dims(stats.bias, threshold)
    return LayerNormOutliers(stats.name, stats.module, gamma_dims, beta_dims, gamma_z, beta_z)


def outlier_dimensions_across_layers(trace: Trace, threshold: float = 3.0) -> list[int]:
    """Dimensions flagged (in γ or β) in at least half of the trace's LayerNorms: the shared outlier dims."""
    outliers = layernorm_outliers(trace, threshold)
    counts: dict[int, int] = {}
    for entry in outliers:
        for dim in set(entry.gamma_dims) | set(entry.beta_dims):
            counts[dim] = counts.get(dim, 0) + 1
    return sorted(dim for dim, count in counts.items() if 2 * count >= len(outliers))


# --- the residual stream -----------------------------------------------------------------------------


def residual_streams(trace: Trace) -> Tensor:
    """[layers + 1, tokens, hidden] float32: embed, then the output of each layer."""
    return torch.cat([trace.embed[None], trace.resid_post]).float()


@dataclass
class MassiveActivations:
    """The largest |activation| of each residual stream against its typical size (Sun et al. 2024)."""

    top: Tensor  # [layers + 1] largest |h| over tokens and dimensions
    token: Tensor  # [layers + 1] long: the token index where it sits
    dim: Tensor  # [layers + 1] long: the hidden dimension where it sits
    median: Tensor  # [layers + 1] median |h| over tokens and dimensions
    ratio: Tensor  # [layers + 1] top / median (inf if the median is 0)


def massive_activations(trace: Trace) -> MassiveActivations:
    """Per residual stream (embed, then each layer output): the top |h|, where it sits, and top / median."""
    magnitudes = residual_streams(trace).abs().flatten(start_dim=1)  # [streams, tokens * hidden]
    top, flat_index = magnitudes.max(dim=-1)
    hidden = trace.embed.shape[-1]
    median = lower_median(magnitudes)
    return MassiveActivations(top, flat_index // hidden, flat_index % hidden, median, top / median)


@dataclass
class ResidualGrowth:
    """How the residual stream's norm grows through the layers, and what each sublayer adds to it.

    Norms are means over all tokens, special tokens included: <s> often carries the largest norm,
    and it is part of what the stream does. Ratios are ratios of these means.
    """

    resid_norm: Tensor  # [layers + 1] mean ‖resid_pre[l]‖, then mean ‖resid_post[-1]‖
    growth_factor: float  # exp(slope) of the least-squares line through log(resid_norm) vs stream index
    layer_ratio: Tensor  # [layers] resid_norm[l + 1] / resid_norm[l]
    attn_out_norm: Tensor  # [layers] mean ‖attn_out[l]‖
    ffn_out_norm: Tensor  # [layers] mean ‖ffn_out[l]‖
    attn_ratio: Tensor  # [layers] attn_out_norm / mean ‖resid_pre[l]‖, the stream it is added to
    ffn_ratio: Tensor  # [layers] ffn_out_norm / mean ‖resid_mid[l]‖, the stream it is added to


def residual_growth(trace: Trace) -> ResidualGrowth:
    """Mean residual norm per stream, its fitted per-layer growth factor, and sublayer/residual ratios."""
    resid_pre, resid_mid = token_mean(trace.resid_pre_norm), token_mean(trace.resid_mid_norm)
    norms = torch.cat([resid_pre, token_mean(trace.resid_post_norm[-1:])])
    attn_out, ffn_out = token_mean(trace.attn_out_norm), token_mean(trace.ffn_out_norm)
    return ResidualGrowth(
        resid_norm=norms,
        growth_factor=math.exp(least_squares_slope(norms.log())),
        layer_ratio=norms[1:] / norms[:-1],
        attn_out_norm=attn_out,
        ffn_out_norm=ffn_out,
        attn_ratio=attn_out / resid_pre,
        ffn_ratio=ffn_out / resid_mid,
    )


def token_mean(norms: Tensor) -> Tensor:
    """[layers] mean over tokens of a [layers, tokens] norm field, in float32."""
    return norms.float().mean(dim=-1)


def least_squares_slope(values: Tensor) -> float:
    """Slope of the least-squares line through (i, values[i]); 0 for fewer than two points."""
    if values.numel() < 2:
        return 0.0
    x = torch.arange(values.numel(), dtype=torch.float64)
    y = values.double()
    x_centred = x - x.mean()
    return float((x_centred * (y - y.mean())).sum() / (x_centred**2).sum())


# --- export ----------------------------------------------------------------------------------------


def summary_table(trace: Trace) -> list[dict]:
    """One row per layer with the analyses above, keyed in the trace vocabulary, ready for CSV or JSON.

    Per-head numbers (entropy, shares) are averaged over heads; massive_* describe the layer's output.
    """
    entropy = attention_entropy(trace)
    sinks = attention_sinks(trace)
    growth = residual_growth(trace)
    massive = massive_activations(trace)
    resid_mid, resid_post = token_mean(trace.resid_mid_norm), token_mean(trace.resid_post_norm)
    rows = []
    for layer in range(trace.num_layers):
        output = layer + 1  # massive activations index streams: this layer's output is stream layer + 1
        rows.append(
            {
                "layer": layer,
                "resid_pre_norm": float(growth.resid_norm[layer]),
                "resid_mid_norm": float(resid_mid[layer]),
                "resid_post_norm": float(resid_post[layer]),
                "attn_out_norm": float(growth.attn_out_norm[layer]),
                "ffn_out_norm": float(growth.ffn_out_norm[layer]),
                "attn_ratio": float(growth.attn_ratio[layer]),
                "ffn_ratio": float(growth.ffn_ratio[layer]),
                "resid_growth": float(growth.layer_ratio[layer]),
                "entropy_mean": float(entropy[layer].mean()),
                "bos_share": float(sinks.bos[layer].mean()),
                "eos_share": float(sinks.eos[layer].mean()),
                "punctuation_share": float(sinks.punctuation[layer].mean()),
                "massive_top": float(massive.top[output]),
                "massive_token": int(massive.token[output]),
                "massive_dim": int(massive.dim[output]),
                "massive_ratio": float(massive.ratio[output]),
            }
        )
    return rows
