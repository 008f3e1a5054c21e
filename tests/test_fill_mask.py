"""fill_mask gives what transformers' pipeline("fill-mask") gives on the same model, plus a trace."""

import pytest
from transformers import pipeline

from rpln_core import RplnError, fill_mask

ARCHS = ["pre-ln", "post-ln"]


def reference(model, text, **kwargs):
    return pipeline("fill-mask", model=model.model, tokenizer=model.tokenizer)(text, **kwargs)


def assert_same_predictions(ours, theirs):
    assert len(ours) == len(theirs)
    for mine, ref in zip(ours, theirs):
        assert (mine["token"], mine["token_str"], mine["sequence"]) == (ref["token"], ref["token_str"], ref["sequence"])
        assert mine["score"] == pytest.approx(ref["score"], abs=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_single_mask_matches_the_pipeline(loaded, arch):
    model = loaded(arch)
    text = "The cat sat on the <mask>."
    result = fill_mask(model, text, top_k=5)
    assert_same_predictions(result.to_pipeline(), reference(model, text, top_k=5))
    assert result.trace.tokens.strings[result.mask_positions[0]] == "<mask>"


@pytest.mark.parametrize("arch", ARCHS)
def test_each_of_several_masks_gets_its_own_top_k_as_in_the_pipeline(loaded, arch):
    model = loaded(arch)
    text = "Paris is the <mask> of France, and <mask> is the capital of Germany."
    ours, theirs = fill_mask(model, text, top_k=3).to_pipeline(), reference(model, text, top_k=3)
    assert len(ours) == len(theirs) == 2
    for mine, ref in zip(ours, theirs):
        assert_same_predictions(mine, ref)


def test_targets_restrict_candidates_as_in_the_pipeline(loaded):
    model = loaded("pre-ln")
    text = "The <mask> sat on the mat."
    targets = ["Ġcat", "Ġdog", "king"]  # a vocabulary entry, another, and a word the pipeline splits
    result = fill_mask(model, text, top_k=5, targets=targets)
    assert_same_predictions(result.to_pipeline(), reference(model, text, top_k=5, targets=targets))
    assert len(result.predictions[0]) == 3  # top_k is capped by the number of targets


def test_mask_typed_the_bert_way_is_read_as_the_models_mask(loaded):
    model = loaded("pre-ln")
    habitual = fill_mask(model, "The cat sat on the [MASK].")
    proper = fill_mask(model, "The cat sat on the <mask>.")
    assert habitual.to_pipeline() == proper.to_pipeline()
    assert any("[MASK]" in notice for notice in habitual.notices)


def test_the_trace_has_a_logit_lens_at_each_mask(loaded):
    model = loaded("pre-ln")
    result = fill_mask(model, "The <mask> sat on the <mask>.")
    lens = result.trace.logit_lens
    assert lens.positions == result.mask_positions
    assert lens.top_ids[-1, :, 0].tolist() == [row[0].token for row in result.predictions]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("The cat sat on the mat.", "no mask"),
        (" ".join(["<mask>"] * 11), "at most 10"),
    ],
)
def test_bad_text_gets_a_clear_message(loaded, text, message):
    with pytest.raises(RplnError, match=message):
        fill_mask(loaded("pre-ln"), text)


def test_long_input_is_cut_with_a_notice(loaded):
    model = loaded("pre-ln")  # reads at most 64 tokens
    text = "The <mask> sat. " + "The cat sat on the mat. " * 30
    result = fill_mask(model, text)
    assert len(result.trace.tokens) == model.max_tokens
    assert any("at most 64" in notice for notice in result.notices)


def test_a_mask_past_the_models_reach_is_refused(loaded):
    text = "The cat sat on the mat. " * 30 + "The <mask> sat."
    with pytest.raises(RplnError, match="beyond the first 64 tokens"):
        fill_mask(loaded("pre-ln"), text)


def test_a_checkpoint_without_an_mlm_head_says_so(loaded):
    with pytest.raises(RplnError, match="no fill-mask head"):
        fill_mask(loaded("pre-ln", "classification"), "The cat sat on the <mask>.")


def test_top_k_must_be_positive(loaded):
    with pytest.raises(RplnError, match="top_k"):
        fill_mask(loaded("pre-ln"), "The <mask>.", top_k=0)
