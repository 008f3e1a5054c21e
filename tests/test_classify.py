"""classify gives what pipeline("text-classification", top_k=None) gives on the same model."""

import pytest
from transformers import pipeline

from conftest import LABELS
from rpln_core import RplnError, classify


def reference(model, inputs):
    scores = pipeline("text-classification", model=model.model, tokenizer=model.tokenizer, top_k=None)(inputs)
    return scores[0] if isinstance(scores[0], list) else scores  # v5 nests a single input's scores


def assert_same_scores(ours, theirs):
    assert [row["label"] for row in ours] == [row["label"] for row in theirs]
    assert [row["score"] for row in ours] == pytest.approx([row["score"] for row in theirs], abs=1e-6)


@pytest.mark.parametrize("arch", ["pre-ln", "post-ln"])
def test_single_text_matches_the_pipeline(loaded, arch):
    model = loaded(arch, "classification", **LABELS)
    text = "A good movie makes you laugh."
    result = classify(model, text)
    assert_same_scores(result.to_pipeline(), reference(model, text))
    assert result.function == "softmax"
    assert sum(label.score for label in result.labels) == pytest.approx(1.0)
    assert {label.label for label in result.labels} == {"negative", "positive"}


def test_text_pair_matches_the_pipeline(loaded):
    model = loaded("pre-ln", "classification", **LABELS)
    first, second = "The king wrote the letter.", "Who wrote the letter?"
    result = classify(model, first, second)
    assert_same_scores(result.to_pipeline(), reference(model, {"text": first, "text_pair": second}))
    assert result.trace.tokens.segments.count(1) > 0  # the second text is in the trace


@pytest.mark.parametrize(
    "config, function",
    [({"num_labels": 1}, "sigmoid"), ({"num_labels": 3, "problem_type": "multi_label_classification"}, "sigmoid"),
     ({"num_labels": 1, "problem_type": "regression"}, "none")],
)
def test_score_function_follows_the_problem_type_as_in_the_pipeline(loaded, config, function):
    model = loaded("pre-ln", "classification", **config)
    text = "The cat sat on the mat."
    result = classify(model, text)
    assert result.function == function
    assert_same_scores(result.to_pipeline(), reference(model, text))


def test_an_mlm_checkpoint_refuses_to_classify(loaded):
    with pytest.raises(RplnError, match="no classification head"):
        classify(loaded("pre-ln", "mlm"), "Some text.")


def test_a_classification_head_missing_from_the_checkpoint_is_called_untrained(loaded, checkpoint_dir, tmp_path):
    """A checkpoint saved without its head loads with random head weights: never present those as a prediction."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from rpln_core.load import load_model

    source = checkpoint_dir("pre-ln", "classification")
    shutil.copytree(source, tmp_path / "headless")
    weights = tmp_path / "headless" / "model.safetensors"
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("classifier.")}
    save_file(state, weights, metadata={"format": "pt"})
    assert json.loads((tmp_path / "headless" / "config.json").read_text())["architectures"]
    with pytest.raises(RplnError, match="untrained classification head"):
        classify(load_model(str(tmp_path / "headless")), "Some text.")


def test_empty_text_gets_a_clear_message(loaded):
    with pytest.raises(RplnError, match="empty"):
        classify(loaded("pre-ln", "classification"), "  ")


@pytest.mark.parametrize("text_pair", ["", "   "])
def test_a_blank_text_pair_is_encoded_as_the_pipeline_encodes_it(loaded, text_pair):
    """None means no pair; a string goes to the tokenizer as the pair. Before, a whitespace-only pair was dropped,
    where the pipeline encodes it as a second segment of space tokens and scores it differently."""
    model = loaded("pre-ln", "classification", **LABELS)
    text = "A good movie makes you laugh."
    paired, alone = classify(model, text, text_pair), classify(model, text)
    assert_same_scores(paired.to_pipeline(), reference(model, {"text": text, "text_pair": text_pair}))
    assert paired.trace.tokens.ids == model.tokenizer(text, text_pair)["input_ids"]
    if text_pair:  # "   ": </s></s>, the spaces, </s>
        assert len(paired.trace.tokens) > len(alone.trace.tokens)
        assert paired.labels[0].score != pytest.approx(alone.labels[0].score, abs=1e-4)
    else:  # "": transformers 5's tokenizer drops an empty pair, so the pipeline scores the text alone
        assert paired.to_pipeline() == alone.to_pipeline()
