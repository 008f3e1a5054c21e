"""Two models on one text: the comparison runs each model as its own task would, and its numbers are the
trace's own (checked against eager hidden states and the fill-mask task)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from rpln_core import compare as comparing
from rpln_core.errors import RplnError
from rpln_core.tasks.fill_mask import fill_mask
from viz import compare as figures
from viz.export import write_tables

TEXT = "the cat sat on the <mask> ."


@pytest.fixture(scope="module")
def twins(loaded):
    return loaded("pre-ln", "mlm"), loaded("post-ln", "mlm")


@pytest.fixture(scope="module")
def comparison(twins):
    return comparing.compare(*twins, TEXT, top_k=3)


def test_each_side_is_the_models_own_fill_mask_pass(twins, comparison):
    for model, side in zip(twins, comparison.models):
        direct = fill_mask(model, TEXT, top_k=3)
        assert comparing.predictions(side) == [
            [{"token": p.token_str, "score": p.score} for p in row] for row in direct.predictions
        ]
        assert side.trace.tokens.strings == direct.trace.tokens.strings
        assert side.layout.architecture == model.architecture


def test_residual_norms_are_the_mean_norms_of_the_models_hidden_states(twins, comparison):
    for model, side in zip(twins, comparison.models):
        inputs = model.tokenizer(TEXT.replace("<mask>", model.tokenizer.mask_token), return_tensors="pt")
        with torch.no_grad():
            hidden = model.body(**inputs, output_hidden_states=True).hidden_states
        # hidden_states[0..L-1] are the inputs of the layers; the comparison's last point is the last layer's
        # output before any final LayerNorm, which transformers 5's hidden_states[-1] already includes.
        expected = [float(h[0].norm(dim=-1).mean()) for h in hidden[:-1]]
        assert comparing.residual_norms(side)["norms"][:-1] == pytest.approx(expected, rel=1e-3)


def test_layernorm_rows_follow_the_placement_and_list_every_layernorm(comparison):
    pre, post = (comparing.layernorm_rows(side) for side in comparison.models)
    assert [row["layernorm"] for row in pre][:3] == ["embed.ln", "blocks.0.ln1", "blocks.0.ln2"]
    assert "ln_final" in [row["layernorm"] for row in pre] and "ln_final" not in [row["layernorm"] for row in post]
    assert pre[1]["placement"] == "before attention" and "after" in post[1]["placement"]
    assert all(row["mean_scale"] > 0 and row["mean_input_std"] > 0 for row in pre + post)


def test_a_text_without_a_mask_compares_the_streams_and_predicts_nothing(twins):
    result = comparing.compare(*twins, "the cat sat .")
    assert all(side.fill_mask is None for side in result.models)
    assert figures.fill_mask_rows(result) == []
    assert len(comparing.entropy(result.models[0])) == result.models[0].trace.num_layers


def test_a_model_without_an_lm_head_says_so_and_still_compares(loaded):
    result = comparing.compare(loaded("pre-ln", "mlm"), loaded("post-ln", "classification"), TEXT)
    assert result.models[1].fill_mask is None
    assert any("no trained fill-mask head" in notice for notice in result.notices)
    rows = figures.fill_mask_rows(result)
    assert rows and all(row["right token"] == "" for row in rows)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text_is_refused_with_a_message(twins, text):
    with pytest.raises(RplnError):
        comparing.compare(*twins, text)


def test_summary_is_strict_json_and_tables_export(comparison, tmp_path):
    summary = comparing.comparison_summary(comparison)
    assert json.loads(json.dumps(summary, allow_nan=False))["left"]["architecture"] == "pre-ln"
    tables = comparing.comparison_tables(comparison)
    layers, heads = comparison.models[0].trace.num_layers, comparison.models[0].trace.num_heads
    assert len(tables["attention_entropy"]) == 2 * layers * heads
    assert len(tables["residual_norms"]) == 2 * (layers + 1)
    paths = write_tables(tables, tmp_path, "compare", {"text": TEXT}, json_name="all")
    assert sorted(p.name for p in paths) == sorted(
        ["compare-all.json"] + [f"compare-{name}.csv" for name in tables]
    )


def test_figures_draw_both_models_in_their_placements_colours(comparison):
    residual = figures.residual_comparison_figure(comparison)
    assert [trace.line.color for trace in residual.data] == ["#1f77b4", "#d62728"]
    # from zero, so the post-LN line reads as flat as it is (the caption says so)
    assert residual.layout.yaxis.type == "linear" and residual.layout.yaxis.rangemode == "tozero"
    scales = figures.layernorm_scale_figure(comparison)
    assert list(scales.layout.xaxis.categoryarray)[0] == "embed.ln"
    assert list(scales.layout.xaxis.categoryarray).index("ln_final") > list(scales.layout.xaxis.categoryarray).index(
        "blocks.2.ln2"
    )
    entropy = figures.entropy_comparison_figure(comparison)
    assert len(entropy.data) == 2 and entropy.data[0].zmax == pytest.approx(math.log(len(comparison.models[0].trace.tokens)))


def test_two_models_of_one_placement_are_told_apart_by_a_dash(twins):
    same = comparing.compare(twins[0], twins[0], TEXT)
    styles = [trace.line.dash for trace in figures.residual_comparison_figure(same).data]
    assert styles == [None, "dash"]


def test_model_names_reach_figures_escaped(comparison):
    hostile = replace(comparison.models[0], name="<b>x</b>")
    fig = figures.residual_comparison_figure(replace(comparison, models=(hostile, comparison.models[1])))
    assert "<b>" not in fig.data[0].name and "&lt;b&gt;" in fig.data[0].name
