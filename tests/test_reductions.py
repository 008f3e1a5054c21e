"""The capture's fast reductions agree with torch's own kernels and with hand-checkable cases."""

from __future__ import annotations

import math

import torch

from rpln_core.reductions import lower_median, mean_and_variance, row_entropy, token_norms


def test_row_entropy_equals_torchs_entr_on_peaked_attention_with_exact_zeros():
    generator = torch.Generator().manual_seed(0)
    # A temperature this low underflows most weights to exactly 0, as very focused heads do.
    probs = torch.softmax(30 * torch.randn(16, 64, 64, generator=generator), dim=-1)
    assert (probs == 0).any()
    before = probs.clone()
    expected = torch.special.entr(probs).sum(dim=-1)
    assert torch.allclose(row_entropy(probs), expected, atol=1e-6)
    assert torch.equal(probs, before)  # the captured weights themselves are left as they were


def test_row_entropy_of_uniform_and_one_hot_rows():
    uniform = torch.full((5,), 1 / 5)
    one_hot = torch.tensor([0.0, 1.0, 0.0])
    assert abs(row_entropy(uniform).item() - math.log(5)) < 1e-6
    assert row_entropy(one_hot).item() == 0.0  # 0·log 0 counts as 0, not NaN


def test_row_entropy_of_low_precision_weights_is_float32():
    probs = torch.full((2, 7), 1 / 7).half()
    entropy = row_entropy(probs)
    assert entropy.dtype == torch.float32 and torch.allclose(entropy, torch.full((2,), math.log(7)), atol=1e-3)


def test_mean_and_variance_equal_torchs_biased_var_mean_even_far_from_zero():
    generator = torch.Generator().manual_seed(1)
    # A large offset is where a one-pass E[x²] − E[x]² formula would lose the variance to cancellation.
    x = 1000 + 0.5 * torch.randn(33, 1024, generator=generator)
    mean, variance = mean_and_variance(x)
    expected_variance, expected_mean = torch.var_mean(x.double(), dim=-1, correction=0)
    assert mean.shape == variance.shape == (33,)
    assert torch.allclose(mean.double(), expected_mean, rtol=1e-6)
    assert torch.allclose(variance.double(), expected_variance, rtol=1e-3)


def test_mean_and_variance_by_hand():
    mean, variance = mean_and_variance(torch.tensor([[1.0, 2.0, 3.0, 6.0]]))
    assert mean.tolist() == [3.0] and variance.tolist() == [3.5]  # (4 + 1 + 0 + 9) / 4


def test_token_norms_are_float32_l2_norms_of_each_row():
    hidden = torch.tensor([[3.0, 4.0], [0.0, 0.0]]).half()
    norms = token_norms(hidden)
    assert norms.dtype == torch.float32 and norms.tolist() == [5.0, 0.0]


def test_lower_median_equals_torchs_median_for_odd_and_even_rows():
    generator = torch.Generator().manual_seed(2)
    for length in (7, 8):
        values = torch.randn(3, 5, length, generator=generator).half()
        assert torch.equal(lower_median(values), values.float().median(dim=-1).values)
    assert lower_median(torch.tensor([[4.0, 1.0, 3.0, 2.0]])).tolist() == [2.0]  # the lower of 2 and 3
