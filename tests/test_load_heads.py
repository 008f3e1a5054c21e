"""The three heads added to the seven classes of RoBERTa(-PreLayerNorm): each loads whole, as the class it was saved
as, on one backbone, and answers only for its own task."""

import pytest
import transformers

from rpln_core.load import CLASS_PREFIX, TASK_SUFFIX, random_model

ARCHS = ["pre-ln", "post-ln"]
NEW_HEADS = ["token-classification", "multiple-choice", "causal-lm"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("task", NEW_HEADS)
def test_each_new_head_loads_as_the_class_it_was_saved_as(loaded, arch, task):
    model = loaded(arch, task)
    assert model.task == task and model.architecture == arch
    assert type(model.model) is getattr(transformers, CLASS_PREFIX[arch] + TASK_SUFFIX[task])
    assert model.missing_weights == () and model.has_trained_head(task)
    assert model.body is getattr(model.model, model.model.base_model_prefix)
    assert len([m for m in model.model.modules() if type(m).__name__.endswith("Encoder")]) == 1
    assert model.config._attn_implementation == "eager"
    assert model.config.is_decoder == (task == "causal-lm")


@pytest.mark.parametrize("task", NEW_HEADS)
def test_a_head_answers_only_for_its_own_task(loaded, task):
    """Token and sequence classifiers are both `classifier`, causal and masked LM heads both `lm_head`: the task,
    not the attribute, says what a head was trained for."""
    model = loaded("pre-ln", task)
    others = ["mlm", "classification", "qa", *NEW_HEADS]
    assert [other for other in others if model.has_trained_head(other)] == [task]


def test_only_multiple_choice_reads_the_pooler(loaded):
    assert loaded("pre-ln", "multiple-choice").pooler is not None
    assert loaded("pre-ln", "token-classification").pooler is None
    assert loaded("pre-ln", "causal-lm").pooler is None


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("task", [*NEW_HEADS, "base"])
def test_random_models_of_every_head_are_built_for_tests(tokenizer, arch, task):
    model = random_model(arch, task, tokenizer, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    assert model.task == task
    assert type(model.model) is getattr(transformers, CLASS_PREFIX[arch] + TASK_SUFFIX[task])
    assert model.model.config.is_decoder == (task == "causal-lm")
