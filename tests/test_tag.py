"""tag gives what pipeline("token-classification") gives on the same model, for every aggregation strategy."""

import json
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import pipeline

from rpln_core import RplnError, classify, load_model, result_frame, tag

ARCHS = ["pre-ln", "post-ln"]
STRATEGIES = ["none", "simple", "first", "average", "max"]
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
BIO = {"id2label": dict(enumerate(LABELS)), "label2id": {label: i for i, label in enumerate(LABELS)}}
# Words split into several tokens, punctuation glued to words, a typed <mask>, non-ASCII and a double space.
TEXT = "The cat sat on the <mask> mat. Paris, zzyzx!  Zürich café"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tagger(loaded):
    return lambda arch="pre-ln": loaded(arch, "token-classification", **BIO)


def reference(model, text, strategy, **kwargs):
    tagger_pipeline = pipeline("token-classification", model=model.model, tokenizer=model.tokenizer,
                               aggregation_strategy=strategy)
    with warnings.catch_warnings():  # byte-level BPE marks no subwords: the pipeline warns it falls back to spaces
        warnings.simplefilter("ignore", UserWarning)
        return tagger_pipeline(text, **kwargs)


def assert_same_rows(ours, theirs):
    assert len(ours) == len(theirs) > 0
    for mine, ref in zip(ours, theirs):
        assert list(mine) == list(ref)  # the same keys in the same order
        assert {k: v for k, v in mine.items() if k != "score"} == {k: v for k, v in ref.items() if k != "score"}
        assert mine["score"] == pytest.approx(float(ref["score"]), abs=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_aggregation_strategy_matches_the_pipeline(tagger, arch, strategy):
    model = tagger(arch)
    every_row = tag(model, TEXT, aggregation_strategy=strategy, ignore_labels=[])
    assert_same_rows(every_row.to_pipeline(), reference(model, TEXT, strategy, ignore_labels=[]))
    default = tag(model, TEXT, aggregation_strategy=strategy)  # the pipeline's default drops "O"
    assert_same_rows(default.to_pipeline(), reference(model, TEXT, strategy))
    assert len(default.entities) < len(every_row.entities)


def test_the_strategy_is_read_without_regard_to_case_as_the_pipeline_reads_it(tagger):
    model = tagger()
    assert tag(model, TEXT, aggregation_strategy="SIMPLE").to_pipeline() == tag(
        model, TEXT, aggregation_strategy="simple"
    ).to_pipeline()


def test_offsets_are_characters_of_the_original_text_not_bytes(tagger):
    """"ü" and "é" are two bytes each, split over byte-level tokens; the offsets still count characters, and
    text[start:end] is exact where the pipeline's grouped `word` decodes twice and garbles them ("Z�rich")."""
    for strategy in STRATEGIES:
        last = tag(tagger(), TEXT, aggregation_strategy=strategy, ignore_labels=[]).entities[-1]
        assert last.end == len(TEXT) < len(TEXT.encode())
        assert TEXT[last.start :].endswith("é")
    grouped = tag(tagger(), TEXT, aggregation_strategy="first", ignore_labels=[]).entities[-1]
    assert TEXT[grouped.start : grouped.end] == "Zürich café" and "ü" not in grouped.word


def test_per_token_scores_are_the_softmax_of_the_models_own_logits(tagger):
    model = tagger()
    result = tag(model, TEXT)
    inputs = model.tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        expected = model.model(**inputs).logits[0].softmax(-1)
    assert result.token_scores.shape == (len(result.trace.tokens), len(LABELS))
    torch.testing.assert_close(result.token_scores, expected, atol=1e-5, rtol=0)
    assert result.labels == LABELS
    assert result.token_labels == [LABELS[i] for i in expected.argmax(-1).tolist()]


def test_the_result_frame_holds_the_pipelines_rows(tagger):
    model = tagger()
    for strategy in ("none", "average"):
        result = tag(model, TEXT, aggregation_strategy=strategy, ignore_labels=[])
        frame = result_frame(result)
        assert frame.to_dict("records") == result.to_pipeline()


def test_a_checkpoint_of_another_head_names_the_task_it_is_for(tagger, loaded):
    with pytest.raises(RplnError, match="no token classification head.*run it with fill_mask"):
        tag(loaded("pre-ln", "mlm"), TEXT)
    # Both heads are called `classifier`; the sequence classifier must not read a token classifier.
    with pytest.raises(RplnError, match="no classification head.*run it with tag"):
        classify(tagger(), TEXT)


def test_a_token_classifier_missing_from_the_checkpoint_is_called_untrained(checkpoint_dir, tmp_path):
    shutil.copytree(checkpoint_dir("pre-ln", "token-classification", **BIO), tmp_path / "headless")
    weights = tmp_path / "headless" / "model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if not k.startswith("classifier.")}, weights,
              metadata={"format": "pt"})
    assert json.loads((tmp_path / "headless" / "config.json").read_text())["architectures"]
    with pytest.raises(RplnError, match="untrained token classification head"):
        tag(load_model(str(tmp_path / "headless")), TEXT)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"aggregation_strategy": "mean"}, "aggregation_strategy must be one of none, simple, first"),
        ({"aggregation_strategy": None}, "aggregation_strategy must be one of"),
        ({"ignore_labels": "O"}, "ignore_labels must be a list of label names"),
        ({"ignore_labels": ["O", 3]}, "ignore_labels must be a list"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(tagger, kwargs, message):
    with pytest.raises(RplnError, match=message):
        tag(tagger(), TEXT, **kwargs)


def test_empty_and_overlong_text_get_clear_messages(tagger):
    with pytest.raises(RplnError, match="text is empty"):
        tag(tagger(), "  ")
    with pytest.raises(RplnError, match="this app reads at most 20,000"):
        tag(tagger(), "x" * 20_001)


def test_a_text_longer_than_the_model_reads_is_cut_with_a_notice(tagger):
    result = tag(tagger(), "The cat sat on the mat. " * 30, ignore_labels=[])
    assert len(result.trace.tokens) == 64
    assert any("at most 64" in notice for notice in result.notices)
    assert max(entity.index for entity in result.entities) == 62  # the last token before </s>
