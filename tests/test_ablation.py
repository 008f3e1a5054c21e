"""Switching off LayerNorm dimensions does what zeroing their γ and β does, and the experiment reports it faithfully."""

from __future__ import annotations

import pytest
import torch

from rpln_core import RplnError, analysis, fill_mask, load_model
from rpln_core.ablation import INTACT, OUTLIERS_OFF, layernorm_dims_off, outlier_ablation
from rpln_core.reductions import kl_divergence

TEXT = "The cat sat on the <mask>, and the dog sat on the <mask>."
DIMS = [3, 17, 30]


@pytest.mark.parametrize("arch", ["pre-ln", "post-ln"])
def test_switching_dims_off_equals_zeroing_gamma_and_beta_in_every_encoder_layernorm(loaded, checkpoint_dir, arch):
    model = loaded(arch)
    with layernorm_dims_off(model, DIMS):
        switched = fill_mask(model, TEXT).probabilities
    edited = load_model(str(checkpoint_dir(arch)))  # a private copy: the weights are edited below
    with torch.no_grad():
        for module in edited.body.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[DIMS] = 0
                module.bias[DIMS] = 0
    torch.testing.assert_close(switched, fill_mask(edited, TEXT).probabilities)
    assert not torch.allclose(switched, fill_mask(model, TEXT).probabilities)  # it did change the model


def test_the_model_is_intact_after_the_block_even_when_it_raises(loaded):
    model = loaded("pre-ln")
    before = fill_mask(model, TEXT).probabilities
    with pytest.raises(RuntimeError):
        with layernorm_dims_off(model, DIMS):
            raise RuntimeError("interrupted")
    with layernorm_dims_off(model, DIMS):
        pass
    torch.testing.assert_close(fill_mask(model, TEXT).probabilities, before)


def test_experiment_runs_intact_outliers_and_disjoint_random_controls_of_the_same_size(loaded):
    model = loaded("post-ln")
    result = outlier_ablation(model, TEXT, dims=DIMS, controls=4, seed=7)
    assert [run.condition for run in result.runs][:2] == [INTACT, OUTLIERS_OFF]
    assert len(result.controls) == 4
    intact = result.run(INTACT)
    assert intact.dims == [] and intact.kl_from_intact == pytest.approx([0.0, 0.0], abs=1e-6)
    assert intact.predictions[0][0] == result.intact_top[0] == fill_mask(model, TEXT).predictions[0][0].token_str
    assert result.run(OUTLIERS_OFF).dims == DIMS
    for control in result.controls:
        assert len(control.dims) == len(DIMS) and not set(control.dims) & set(DIMS)
    again = outlier_ablation(model, TEXT, dims=DIMS, controls=4, seed=7)
    assert [run.dims for run in again.controls] == [run.dims for run in result.controls]  # the seed decides
    rows = result.to_rows()
    assert len(rows) == len(result.runs) * 2 and rows[0]["intact_top"] == result.intact_top[0]


def test_probability_and_kl_are_read_from_each_runs_own_distribution(loaded):
    model = loaded("pre-ln")
    result = outlier_ablation(model, TEXT, dims=DIMS, controls=1)
    intact = fill_mask(model, TEXT).probabilities
    with layernorm_dims_off(model, DIMS):
        off = fill_mask(model, TEXT).probabilities
    top = intact.argmax(dim=-1)
    run = result.run(OUTLIERS_OFF)
    assert run.intact_top_probability == pytest.approx(off[[0, 1], top].tolist())
    assert run.kl_from_intact == pytest.approx(kl_divergence(intact, off).tolist())


def test_kl_divergence_by_hand():
    p = torch.tensor([[0.5, 0.5, 0.0]])
    q = torch.tensor([[0.25, 0.5, 0.25]])
    assert kl_divergence(p, q).item() == pytest.approx(0.5 * torch.log(torch.tensor(2.0)).item())
    assert kl_divergence(p, p).item() == 0.0


def test_default_dims_are_the_bundled_models_shared_outliers():
    model = load_model("preln-mini")
    text = "In the beginning God created the heaven and the <mask>."
    expected = analysis.outlier_dimensions_across_layers(fill_mask(model, text).trace)
    assert expected  # the bundled model has some: dimension 128 is flagged in most of its LayerNorms
    assert outlier_ablation(model, text, controls=1).run(OUTLIERS_OFF).dims == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dims=[32]), "between 0 and 31"),
        (dict(dims=list(range(17))), "between 1 and 16"),
        (dict(dims=DIMS, controls=0), "random controls must be a whole number from 1 to 10"),
        (dict(dims=DIMS, controls=2.5), "from 1 to 10; got 2.5"),
        (dict(dims=DIMS, seed=2**70), "Seed must be a whole number from 0"),
        (dict(threshold=1e6), "nothing to switch off"),
    ],
)
def test_bad_settings_get_a_message(loaded, kwargs, message):
    with pytest.raises(RplnError, match=message):
        outlier_ablation(loaded("pre-ln"), TEXT, **kwargs)
