"""Analyses of a trace, checked on hand-built traces with known answers and on tiny real models."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace

import numpy as np
import pytest
import torch

from rpln_core.analysis import (
    attention_entropy,
    attention_entropy_per_query,
    attention_rollout,
    attention_sinks,
    is_punctuation,
    layernorm_outliers,
    massive_activations,
    outlier_dimensions_across_layers,
    residual_growth,
    residual_streams,
    summary_table,
)
from rpln_core.capture import CaptureOptions, LayerNormStats, Trace
from rpln_core.tasks.fill_mask import fill_mask
from rpln_core.tokens import Tokens

SPECIAL = {"<s>", "</s>"}
HIDDEN = 32
FLOAT32 = CaptureOptions(torch.float32, torch.float32)


def hand_tokens(strings: list[str]) -> Tokens:
    special = [s in SPECIAL for s in strings]
    return Tokens(
        ids=list(range(len(strings))),
        strings=strings,
        offsets=[(0, 0)] * len(strings),
        special=special,
        segments=[None if s else 0 for s in special],
    )


def hand_trace(attentions: torch.Tensor, strings: list[str] | None = None, **fields) -> Trace:
    """A trace with the given attentions [layers, heads, tokens, tokens], unit norms and zero streams."""
    layers, _, n, _ = attentions.shape
    strings = strings or ["<s>"] + ["w"] * (n - 2) + ["</s>"]
    ones = torch.ones(layers, n)
    trace = Trace(
        model_name="hand-built",
        architecture="pre-ln",
        tokens=hand_tokens(strings),
        attentions=attentions,
        embed=torch.zeros(n, HIDDEN),
        resid_mid=torch.zeros(layers, n, HIDDEN),
        resid_post=torch.zeros(layers, n, HIDDEN),
        ln_final_in=None,
        ln_final_out=None,
        resid_pre_norm=ones,
        resid_mid_norm=ones,
        resid_post_norm=ones,
        attn_out_norm=ones,
        ffn_out_norm=ones,
        layernorms=[],
    )
    return replace(trace, **fields)


def uniform(layers: int, heads: int, n: int) -> torch.Tensor:
    return torch.full((layers, heads, n, n), 1.0 / n)


def all_on(key: int, layers: int, heads: int, n: int) -> torch.Tensor:
    """Every query of every head puts all its attention on token `key`."""
    attentions = torch.zeros(layers, heads, n, n)
    attentions[..., key] = 1.0
    return attentions


def random_attentions(layers: int, heads: int, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(layers, heads, n, n, generator=generator).softmax(dim=-1)


def layernorm(name: str, weight: torch.Tensor, bias: torch.Tensor) -> LayerNormStats:
    zeros = torch.zeros(3)
    return LayerNormStats(name, name, None, "test", [0, 1, 2], zeros, zeros, zeros, zeros, zeros, weight, bias)


def spike(dim: int | None, base: float, height: float = 4.0) -> torch.Tensor:
    """A flat vector of `base` with one entry raised by `height` at `dim` (none if `dim` is None)."""
    vector = torch.full((HIDDEN,), base)
    if dim is not None:
        vector[dim] += height
    return vector


# --- attention entropy ---------------------------------------------------------------------------


def test_uniform_attention_over_n_tokens_has_entropy_log_n():
    entropy = attention_entropy(hand_trace(uniform(2, 2, 3)))
    assert entropy.shape == (2, 2)
    assert torch.allclose(entropy, torch.full((2, 2), math.log(3)))


def test_one_hot_attention_has_zero_entropy_without_nan_from_zero_weights():
    entropy = attention_entropy(hand_trace(all_on(0, 2, 2, 3)))
    assert torch.equal(entropy, torch.zeros(2, 2))


def test_per_query_entropy_matches_the_textbook_formula_and_its_mean_is_the_head_entropy():
    attentions = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]).expand(1, 1, 3, 3)
    trace = hand_trace(attentions.clone())
    expected = [math.log(2), 0.0, -sum(p * math.log(p) for p in (0.2, 0.3, 0.5))]
    per_query = attention_entropy_per_query(trace)
    assert per_query.shape == (1, 1, 3)
    assert per_query[0, 0].tolist() == pytest.approx(expected, abs=1e-6)
    assert attention_entropy(trace)[0, 0].item() == pytest.approx(sum(expected) / 3, abs=1e-6)


def test_entropy_of_float16_attentions_is_computed_in_float32():
    entropy = attention_entropy(hand_trace(uniform(1, 1, 7).half()))
    assert entropy.dtype == torch.float32
    assert entropy.item() == pytest.approx(math.log(7), abs=1e-3)


# --- attention rollout ---------------------------------------------------------------------------


@pytest.mark.parametrize("residual", [True, False])
def test_rollout_of_identity_attentions_is_the_identity(residual):
    attentions = torch.eye(3).expand(2, 2, 3, 3).clone()
    rollout = attention_rollout(hand_trace(attentions), residual=residual)
    assert torch.allclose(rollout, torch.eye(3).expand(2, 3, 3))


def test_rollout_without_residual_of_one_layer_is_the_head_averaged_attention():
    attentions = random_attentions(1, 4, 5)
    rollout = attention_rollout(hand_trace(attentions), residual=False)
    assert torch.allclose(rollout[0], attentions[0].mean(dim=0), atol=1e-6)


def test_rollout_rows_sum_to_one_at_every_layer():
    rollout = attention_rollout(hand_trace(random_attentions(3, 2, 6)))
    assert rollout.shape == (3, 6, 6)
    assert torch.allclose(rollout.sum(dim=-1), torch.ones(3, 6), atol=1e-5)


def test_rollout_multiplies_later_layers_on_the_left():
    # Layer 0 sends every token to token 1; layer 1 sends every token to token 0, whose stream is by
    # then all token 1: every output ends up reading token 1. The other order would say token 0.
    attentions = torch.cat([all_on(1, 1, 1, 2), all_on(0, 1, 1, 2)])
    rollout = attention_rollout(hand_trace(attentions), residual=False)
    assert torch.equal(rollout[1], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))


def test_rollout_with_residual_mixes_half_identity_as_worked_by_hand():
    # All attention on token 1: Â = [[.5, .5], [0, 1]] and Â·Â = [[.25, .75], [0, 1]].
    rollout = attention_rollout(hand_trace(all_on(1, 2, 2, 2)))
    assert torch.allclose(rollout[0], torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    assert torch.allclose(rollout[1], torch.tensor([[0.25, 0.75], [0.0, 1.0]]))


def test_rollout_matches_a_numpy_chain_of_residual_mixed_layers():
    attentions = random_attentions(3, 2, 4, seed=1)
    mixed = [0.5 * a.mean(0).numpy() + 0.5 * np.eye(4) for a in attentions]
    expected = np.linalg.multi_dot([mixed[2], mixed[1], mixed[0]])
    rollout = attention_rollout(hand_trace(attentions))
    assert np.allclose(rollout[2].numpy(), expected, atol=1e-6)


# --- attention sinks -----------------------------------------------------------------------------


def test_all_attention_on_bos_gives_a_bos_share_of_one_and_nothing_elsewhere():
    sinks = attention_sinks(hand_trace(all_on(0, 2, 2, 3)))
    assert torch.equal(sinks.bos, torch.ones(2, 2))
    assert torch.equal(sinks.eos, torch.zeros(2, 2))
    assert torch.equal(sinks.punctuation, torch.zeros(2, 2))


def test_eos_share_counts_every_separator_of_a_text_pair():
    strings = ["<s>", "a", "</s>", "</s>", "b", "</s>"]
    sinks = attention_sinks(hand_trace(uniform(1, 2, 6), strings))
    assert torch.allclose(sinks.eos, torch.full((1, 2), 3 / 6))
    assert torch.allclose(sinks.bos, torch.full((1, 2), 1 / 6))


def test_punctuation_share_counts_punctuation_only_tokens_and_no_special_ones():
    strings = ["<s>", "Hi", " ,", "…", "a.", "</s>"]
    sinks = attention_sinks(hand_trace(uniform(1, 1, 6), strings))
    assert sinks.punctuation.item() == pytest.approx(2 / 6)


@pytest.mark.parametrize(
    "text, expected",
    [(",", True), (" ,", True), ("...", True), ("«»", True), ("a.", False), ("$", False), (" ", False), ("", False)],
)
def test_a_token_is_punctuation_when_all_its_visible_characters_are(text, expected):
    assert is_punctuation(text) is expected


# --- LayerNorm outliers --------------------------------------------------------------------------


def test_a_gamma_with_one_spike_flags_exactly_that_dimension():
    trace = hand_trace(uniform(1, 1, 3), layernorms=[layernorm("blocks.0.ln1", spike(5, 1.0), spike(None, 0.0))])
    (outliers,) = layernorm_outliers(trace)
    assert (outliers.name, outliers.gamma_dims, outliers.beta_dims) == ("blocks.0.ln1", [5], [])
    values = spike(5, 1.0).tolist()
    reference_z = (values[5] - statistics.fmean(values)) / statistics.pstdev(values)
    assert outliers.gamma_z == pytest.approx([reference_z], rel=1e-5)


def test_a_spike_below_the_threshold_is_not_flagged():
    trace = hand_trace(uniform(1, 1, 3), layernorms=[layernorm("embed.ln", spike(5, 1.0), spike(2, 0.0))])
    # A single spike among 32 entries sits sqrt(31) ≈ 5.57 standard deviations out.
    assert layernorm_outliers(trace, threshold=6.0)[0].gamma_dims == []
    assert layernorm_outliers(trace, threshold=5.0)[0].beta_dims == [2]


def test_shared_outlier_dimensions_are_those_flagged_in_at_least_half_the_layernorms():
    layernorms = [
        layernorm("a", spike(5, 1.0), spike(9, 0.0)),
        layernorm("b", spike(9, 1.0), spike(5, 0.0)),
        layernorm("c", spike(7, 1.0), spike(5, 0.0)),
        layernorm("d", spike(None, 1.0), spike(None, 0.0)),
    ]
    trace = hand_trace(uniform(1, 1, 3), layernorms=layernorms)
    # dim 5: 3 of 4, dim 9: 2 of 4 (exactly half), dim 7: 1 of 4.
    assert outlier_dimensions_across_layers(trace) == [5, 9]


# --- massive activations -------------------------------------------------------------------------


def test_a_stream_with_one_huge_entry_reports_where_it_sits_and_its_ratio_to_the_median():
    resid_post = torch.ones(2, 3, HIDDEN)
    resid_post[1, 1, 3] = -100.0  # the output of layer 1 (stream 2), token 1, dimension 3
    trace = hand_trace(uniform(2, 1, 3), embed=torch.ones(3, HIDDEN), resid_post=resid_post)
    massive = massive_activations(trace)
    assert massive.top.tolist() == [1.0, 1.0, 100.0]
    assert (massive.token[2].item(), massive.dim[2].item()) == (1, 3)
    assert massive.median.tolist() == [1.0, 1.0, 1.0]
    assert massive.ratio.tolist() == [1.0, 1.0, 100.0]


# --- residual growth -----------------------------------------------------------------------------


def test_norms_doubling_each_layer_give_a_fitted_growth_factor_of_two():
    norms = torch.tensor([1.0, 2.0, 4.0, 8.0])[:, None].expand(4, 5)  # streams embed … layer 3 output
    trace = hand_trace(
        uniform(3, 1, 5),
        resid_pre_norm=norms[:3],
        resid_post_norm=norms[1:],
        attn_out_norm=0.5 * norms[:3],
    )
    growth = residual_growth(trace)
    assert growth.resid_norm.tolist() == [1.0, 2.0, 4.0, 8.0]
    assert growth.growth_factor == pytest.approx(2.0)
    assert growth.layer_ratio.tolist() == [2.0, 2.0, 2.0]
    assert growth.attn_ratio.tolist() == [0.5, 0.5, 0.5]  # attention adds half the stream it reads
    assert growth.ffn_ratio.tolist() == [1.0, 1.0, 1.0]  # unit ffn_out against unit resid_mid


def test_the_growth_factor_is_a_least_squares_fit_of_log_norms():
    norms = torch.tensor([1.0, 3.0, 4.0, 20.0])
    trace = hand_trace(
        uniform(3, 1, 2), resid_pre_norm=norms[:3, None].expand(3, 2), resid_post_norm=norms[1:, None].expand(3, 2)
    )
    slope = np.polyfit(np.arange(4), np.log(norms.numpy()), 1)[0]
    assert residual_growth(trace).growth_factor == pytest.approx(math.exp(slope), rel=1e-6)


# --- real tiny models ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["pre-ln", "post-ln"])
def real_trace(request, loaded) -> Trace:
    return fill_mask(loaded(request.param, "mlm"), "The cat sat on the <mask>, and looked!", options=FLOAT32).trace


def test_real_entropies_lie_between_zero_and_log_tokens(real_trace):
    entropy = attention_entropy(real_trace)
    assert entropy.shape == (real_trace.num_layers, real_trace.num_heads)
    assert (entropy >= 0).all() and (entropy <= math.log(len(real_trace.tokens)) + 1e-5).all()


def test_real_sink_shares_are_fractions_that_together_never_exceed_one(real_trace):
    sinks = attention_sinks(real_trace)
    for share in (sinks.bos, sinks.eos, sinks.punctuation):
        assert share.shape == (real_trace.num_layers, real_trace.num_heads)
        assert (share >= 0).all() and (share <= 1 + 1e-5).all()
    assert (sinks.bos + sinks.eos + sinks.punctuation <= 1 + 1e-5).all()
    assert (sinks.punctuation > 0).all()  # "," and "!" are in the text


def test_real_rollout_rows_sum_to_one(real_trace):
    rollout = attention_rollout(real_trace)
    assert torch.allclose(rollout.sum(dim=-1), torch.ones(rollout.shape[:2]), atol=1e-5)


def test_real_massive_activation_is_the_largest_entry_of_each_stream(real_trace):
    streams = residual_streams(real_trace)
    massive = massive_activations(real_trace)
    assert torch.equal(massive.top, streams.abs().amax(dim=(1, 2)))
    located = streams[torch.arange(len(streams)), massive.token, massive.dim].abs()
    assert torch.equal(located, massive.top)
    assert (massive.ratio >= 1).all()


def test_real_residual_norms_agree_with_the_norms_of_the_stored_streams(real_trace):
    growth = residual_growth(real_trace)
    expected = residual_streams(real_trace).norm(dim=-1).mean(dim=-1)
    assert torch.allclose(growth.resid_norm, expected, rtol=1e-5)
    assert growth.growth_factor > 0 and math.isfinite(growth.growth_factor)


def test_real_layernorm_outliers_name_every_layernorm_in_the_trace(real_trace):
    outliers = layernorm_outliers(real_trace)
    assert [o.name for o in outliers] == [stats.name for stats in real_trace.layernorms]
    assert all(0 <= dim < HIDDEN for o in outliers for dim in o.gamma_dims + o.beta_dims)
    assert all(0 <= dim < HIDDEN for dim in outlier_dimensions_across_layers(real_trace))


def test_summary_table_has_one_json_ready_row_per_layer(real_trace):
    rows = summary_table(real_trace)
    assert [row["layer"] for row in rows] == list(range(real_trace.num_layers))
    assert {"resid_pre_norm", "attn_out_norm", "ffn_out_norm", "entropy_mean", "bos_share", "massive_ratio"} <= set(
        rows[0]
    )
    assert json.loads(json.dumps(rows)) == rows


def test_float16_storage_gives_the_same_entropies_as_float32(loaded):
    model = loaded("pre-ln", "mlm")
    text = "The cat sat on the <mask>."
    half = fill_mask(model, text, options=CaptureOptions(torch.float16, torch.float16)).trace
    full = fill_mask(model, text, options=FLOAT32).trace
    assert torch.allclose(attention_entropy(half), attention_entropy(full), atol=2e-3)
    assert torch.allclose(attention_rollout(half), attention_rollout(full), atol=2e-3)
