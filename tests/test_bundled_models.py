"""The models shipped in models/: they load offline by name, their tokenizer is RoBERTa's format, the twins
differ only in where the LayerNorms sit, and each one does its task on plain inputs."""

from __future__ import annotations


import pytest
import torch

from rpln_core.catalog import BUNDLED_DIR, bundled_models, checkpoint_config
from rpln_core.load import load_model
from rpln_core.tasks.classify import classify
from rpln_core.tasks.fill_mask import fill_mask
from rpln_core.tasks.qa import answer
from rpln_app.settings import from_environment

EXPECTED = {  # name -> (model_type, architecture class)
    "preln-mini": ("roberta-prelayernorm", "RobertaPreLayerNormForMaskedLM"),
    "postln-mini": ("roberta", "RobertaForMaskedLM"),
    "preln-mini-sentiment": ("roberta-prelayernorm", "RobertaPreLayerNormForSequenceClassification"),
    "preln-mini-qa": ("roberta-prelayernorm", "RobertaPreLayerNormForQuestionAnswering"),
    # deltas over preln-mini (rpln_core.deltas), built into checkpoints on first load
    "preln-mini-pos": ("roberta-prelayernorm", "RobertaPreLayerNormForTokenClassification"),
    "preln-mini-choice": ("roberta-prelayernorm", "RobertaPreLayerNormForMultipleChoice"),
    "preln-mini-causal": ("roberta-prelayernorm", "RobertaPreLayerNormForCausalLM"),
}
SIZE_BUDGET_MB = 60  # issue 14: the GPU machine takes 64 MiB of tracked files in all


@pytest.fixture(scope="module", autouse=True)
def offline(monkeypatch_module):
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def bundled():
    return {name: load_model(name) for name in EXPECTED}


def config_of(name: str) -> dict:
    return checkpoint_config(BUNDLED_DIR / name)


def test_every_bundled_model_is_listed_and_within_the_size_budget():
    assert set(EXPECTED) <= set(bundled_models())
    total = sum(f.stat().st_size for f in BUNDLED_DIR.rglob("*") if f.is_file()) / 2**20
    assert total <= SIZE_BUDGET_MB


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_bundled_model_loads_by_name_with_its_own_class_and_fp16_weights(bundled, name):
    model_type, architecture = EXPECTED[name]
    config = config_of(name)
    assert (config["model_type"], config["architectures"]) == (model_type, [architecture])
    assert config.get("dtype", config.get("torch_dtype")) == "float16"
    loaded = bundled[name]
    assert type(loaded.model).__name__ == architecture
    assert next(loaded.model.parameters()).dtype == torch.float32  # upcast: the app computes in fp32
    assert not loaded.missing_weights


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_tokenizer_has_robertas_special_ids_and_the_trained_vocabulary(bundled, name):
    tokenizer = bundled[name].tokenizer
    specials = [tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>")]
    assert specials == [0, 1, 2, 3]
    assert len(tokenizer) == config_of(name)["vocab_size"] > 8000  # not the 5-token vocabulary of a bad load
    text = "The King James Bible, in 1611: “Let there be light.”"
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_mask_takes_the_space_before_it_as_robertas_does(bundled):
    tokenizer = bundled["preln-mini"].tokenizer
    ids = tokenizer("The <mask> sat.")["input_ids"]
    assert ids.count(tokenizer.mask_token_id) == 1
    assert tokenizer.convert_ids_to_tokens(ids)[1:4] == ["The", "<mask>", "Ġsat"]


def test_the_twins_share_tokenizer_and_config_and_differ_only_in_layernorm_placement(bundled):
    for file in ("vocab.json", "merges.txt"):
        assert (BUNDLED_DIR / "preln-mini" / file).read_bytes() == (BUNDLED_DIR / "postln-mini" / file).read_bytes()
    pre, post = config_of("preln-mini"), config_of("postln-mini")
    differing = {key for key in pre.keys() | post.keys() if pre.get(key) != post.get(key)}
    assert differing <= {"model_type", "architectures"}
    pre_params = {name: p.shape for name, p in bundled["preln-mini"].body.named_parameters()}
    post_params = {name: p.shape for name, p in bundled["postln-mini"].body.named_parameters()}
    not_layernorm = lambda names: {n for n in names if "LayerNorm" not in n}  # noqa: E731
    assert not_layernorm(pre_params) == not_layernorm(post_params)
    assert all(pre_params[n] == post_params[n] for n in not_layernorm(pre_params))
    # pre-LN normalises before each sublayer and once after the last layer; post-LN after each residual add
    assert "encoder.layer.0.attention.LayerNorm.weight" in pre_params and "LayerNorm.weight" in pre_params
    assert "encoder.layer.0.attention.output.LayerNorm.weight" in post_params and "LayerNorm.weight" not in post_params


@pytest.mark.parametrize("name", ["preln-mini", "postln-mini"])
@pytest.mark.parametrize(
    "text, expected",
    [
        ("In the beginning God created the heaven and the <mask>.", "earth"),
        ("This is one of the <mask> films of the year.", "best"),
    ],
)
def test_both_twins_fill_masks_in_the_corpus_genres_sensibly(bundled, name, text, expected):
    top5 = [p.token_str.strip() for p in fill_mask(bundled[name], text, top_k=5).predictions[0]]
    assert expected in top5


def test_the_sentiment_model_labels_clear_reviews(bundled):
    loaded = bundled["preln-mini-sentiment"]
    assert loaded.model.config.id2label == {0: "negative", 1: "positive"}
    assert classify(loaded, "A warm, funny and deeply moving film.").labels[0].label == "positive"
    assert classify(loaded, "Dull, lifeless and far too long.").labels[0].label == "negative"


def test_the_qa_model_finds_the_definition_of_the_asked_word(bundled):
    context = "harp: a chordal stringed instrument. cat: a small domesticated feline. oak: a tree of the genus Quercus."
    assert answer(bundled["preln-mini-qa"], "What is a cat?", context).answers[0].answer == "a small domesticated feline"


def test_the_app_defaults_to_the_bundled_models(monkeypatch):
    for task in ("FILL_MASK", "CLASSIFICATION", "QA", "TOKEN_CLASSIFICATION", "MULTIPLE_CHOICE", "CAUSAL_LM",
                 "COMPARE_LEFT", "COMPARE_RIGHT"):
        monkeypatch.delenv(f"RPLN_DEFAULT_{task}", raising=False)
    monkeypatch.delenv("RPLN_MODELS", raising=False)
    settings = from_environment([])
    assert settings.defaults == {
        "fill-mask": "preln-mini",
        "classification": "preln-mini-sentiment",
        "qa": "preln-mini-qa",
        "token-classification": "preln-mini-pos",
        "multiple-choice": "preln-mini-choice",
        "causal-lm": "preln-mini-causal",
        "compare-left": "preln-mini",
        "compare-right": "postln-mini",
    }
    assert settings.models[:len(EXPECTED)] == sorted(EXPECTED)
