"""choose scores choices as the model's own forward does on the batched [1, choices, tokens] input it is trained on."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from rpln_core import RplnError, budgets, choose, load_model, result_frame

ARCHS = ["pre-ln", "post-ln"]
CONTEXT = "The cat sat on the"
CHOICES = ["mat.", "dog and the king.", "moon", "mat in Paris."]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_logits(model, context, choices):
    """The head's logits from one batched forward, inputs built by hand as a SWAG-style trainer builds them."""
    inputs = model.tokenizer([context] * len(choices), choices, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.model(**{name: tensor[None] for name, tensor in inputs.items()}).logits[0]  # [choices]


@pytest.mark.parametrize("arch", ARCHS)
def test_scores_are_the_softmax_over_the_models_own_logits(loaded, arch):
    model = loaded(arch, "multiple-choice")
    result = choose(model, CONTEXT, CHOICES)
    expected = reference_logits(model, CONTEXT, CHOICES)
    assert [row.logit for row in result.choices] == pytest.approx(expected.tolist(), abs=1e-5)
    assert [row.score for row in result.choices] == pytest.approx(expected.softmax(-1).tolist(), abs=1e-5)
    assert [row.choice for row in result.choices] == CHOICES
    assert result.best == int(expected.argmax())
    assert result.ranked()[0] is result.choices[result.best]


def test_each_choice_has_the_trace_of_its_own_pass(loaded):
    model = loaded("pre-ln", "multiple-choice")
    result = choose(model, CONTEXT, CHOICES)
    assert len(result.traces) == len(CHOICES)
    for choice, trace in zip(CHOICES, result.traces):
        assert trace.tokens.ids == model.tokenizer(CONTEXT, choice)["input_ids"]
        assert trace.attentions.shape[:2] == (model.num_layers, model.config.num_attention_heads)
    assert result.trace is result.traces[result.best]
    # The shared context enters both passes alike, but attention reads both ways: by the last layer, the context
    # itself reads differently under each choice.
    first, second = result.traces[0], result.traces[1]
    shared = result.differing[0][0]
    assert torch.equal(first.embed[:shared], second.embed[:shared])
    assert not torch.allclose(first.resid_post[-1, :shared].float(), second.resid_post[-1, :shared].float())


def test_the_differing_tokens_are_each_choices_own(loaded):
    model = loaded("pre-ln", "multiple-choice")
    choices = ["The king wrote the letter.", "The cat wrote the letter."]
    result = choose(model, "Who wrote the letter?", choices)
    words = [[result.traces[i].tokens.strings[p] for p in positions] for i, positions in enumerate(result.differing)]
    assert words == [["king"], ["cat"]]
    # Choices with nothing in common at the end: everything after the shared context differs.
    result = choose(model, CONTEXT, ["mat.", "dog"])
    expected_start = len(model.tokenizer(CONTEXT)["input_ids"]) + 1  # <s> context </s> </s>
    assert [positions[0] for positions in result.differing] == [expected_start, expected_start]
    assert [result.traces[i].tokens.strings[p[-1] + 1] for i, p in enumerate(result.differing)] == ["</s>", "</s>"]


def test_the_result_frame_has_a_row_per_choice_in_the_order_given(loaded):
    result = choose(loaded("pre-ln", "multiple-choice"), CONTEXT, CHOICES)
    frame = result_frame(result)
    assert frame["choice"].tolist() == CHOICES
    assert frame["score"].tolist() == [row.score for row in result.choices]
    assert frame.loc[frame["rank"] == 1, "index"].item() == result.best
    assert frame[["choice", "score", "logit"]].to_dict("records") == result.to_dicts()


@pytest.mark.parametrize(
    "choices, message",
    [
        (["only one"], "choices must be a list of 2 to 8 texts; got 1"),
        ([f"choice {i}" for i in range(9)], "choices must be a list of 2 to 8 texts; got 9"),
        ("mat or moon", "choices must be a list of 2 to 8 texts; got str"),
        (["mat.", "  "], "choice 2 is empty"),
        (["mat.", None], "choice 2 must be text"),
    ],
)
def test_bad_choices_are_refused_naming_the_field(loaded, choices, message):
    with pytest.raises(RplnError, match=message):
        choose(loaded("pre-ln", "multiple-choice"), CONTEXT, choices)


def test_the_number_of_choices_is_a_budget(loaded):
    saved = budgets.current()
    try:
        budgets.configure(max_choices=3)
        with pytest.raises(RplnError, match="2 to 3 texts; got 4"):
            choose(loaded("pre-ln", "multiple-choice"), CONTEXT, CHOICES)
    finally:
        budgets.configure(**{name: getattr(saved, name) for name in saved.__dataclass_fields__})


def test_an_empty_or_overlong_context_is_refused(loaded):
    model = loaded("pre-ln", "multiple-choice")
    with pytest.raises(RplnError, match="context is empty"):
        choose(model, " ", CHOICES)
    with pytest.raises(RplnError, match="context is 20,001 characters"):
        choose(model, "x" * 20_001, CHOICES)


def test_a_long_pair_is_cut_with_a_notice(loaded):
    result = choose(loaded("pre-ln", "multiple-choice"), "The cat sat on the mat. " * 30, CHOICES)
    assert all(len(trace.tokens) == 64 for trace in result.traces)
    assert any("at most 64" in notice for notice in result.notices)


def test_another_head_is_refused_naming_the_right_task(loaded):
    with pytest.raises(RplnError, match="no multiple choice head.*run it with classify"):
        choose(loaded("pre-ln", "classification"), CONTEXT, CHOICES)


def test_a_missing_pooler_makes_the_head_untrained(checkpoint_dir, tmp_path):
    """Multiple choice reads the pooler, which every other head leaves unused: without it the scores are random."""
    shutil.copytree(checkpoint_dir("pre-ln", "multiple-choice"), tmp_path / "no-pooler")
    weights = tmp_path / "no-pooler" / "model.safetensors"
    state = load_file(weights)
    assert any(".pooler." in key for key in state)
    save_file({k: v for k, v in state.items() if ".pooler." not in k}, weights, metadata={"format": "pt"})
    model = load_model(str(tmp_path / "no-pooler"))
    with pytest.raises(RplnError, match="untrained multiple choice head.*weights of its pooler are not in it"):
        choose(model, CONTEXT, CHOICES)
