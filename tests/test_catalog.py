"""The catalog records how each known model was trained, and tasks say when an input runs past its trained length."""

import dataclasses
import subprocess
import sys

import pytest

from rpln_core import classify, fill_mask
from rpln_core.catalog import BUNDLED_DIR, CARDS, HUB_PRESETS, bundled_models, checkpoint_config, model_card
from rpln_core.tasks.qa import answer

EFFICIENT_MLM = "andreasmadsen/efficient_mlm_m0.40"


def test_the_catalog_imports_without_torch_or_transformers():
    """The app lists models before the engine's heavy imports."""
    code = "import sys, rpln_core.catalog; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_hub_preset_has_a_card_and_the_presets_are_unchanged():
    rates = ("15", "20", "30", "40", "50", "60", "70", "80")
    roberta = ["FacebookAI/roberta-base", "FacebookAI/roberta-large"]
    assert HUB_PRESETS == [f"andreasmadsen/efficient_mlm_m0.{rate}" for rate in rates] + roberta
    assert all(model_card(name).preset for name in HUB_PRESETS)
    assert len({card.name for card in CARDS}) == len(CARDS)


@pytest.mark.parametrize("rate", ["15", "20", "30", "40", "50", "60", "70", "80"])
def test_efficient_mlm_was_trained_on_128_tokens_predicting_only_masked_ones(rate):
    card = model_card(f"andreasmadsen/efficient_mlm_m0.{rate}")
    assert (card.architecture, card.layers, card.hidden, card.heads) == ("pre-ln", 24, 1024, 16)
    assert card.trained_tokens == 128  # DinkyTrain's TOKENS_PER_SAMPLE, though the config has 514 positions
    assert card.masking_rate == int(rate) / 100
    assert not card.trained_on_visible_tokens  # SAME_RATE=0, RANDOM_RATE=0
    assert "2202.08005" in card.source


def test_the_801010_controls_kept_berts_replacement_recipe():
    for rate in ("15", "40"):
        card = model_card(f"andreasmadsen/efficient_mlm_m0.{rate}-801010")
        assert card.trained_on_visible_tokens and not card.preset and card.trained_tokens == 128


@pytest.mark.parametrize("name, layers, hidden, parameters", [
    ("FacebookAI/roberta-base", 12, 768, 125), ("FacebookAI/roberta-large", 24, 1024, 355)
])
def test_roberta_was_trained_on_512_tokens_with_80_10_10(name, layers, hidden, parameters):
    card = model_card(name)
    assert card.architecture == "post-ln"
    assert (card.layers, card.hidden, card.parameters_millions) == (layers, hidden, parameters)
    assert card.trained_tokens == 512 and card.masking_rate == 0.15 and card.trained_on_visible_tokens


@pytest.mark.parametrize("name", bundled_models())
def test_each_bundled_models_card_agrees_with_its_config(name):
    card, config = model_card(name), checkpoint_config(BUNDLED_DIR / name)
    assert card is not None, f"{name} is bundled but has no card"
    architecture = "pre-ln" if config["model_type"] == "roberta-prelayernorm" else "post-ln"
    assert card.architecture == architecture
    assert (card.layers, card.hidden, card.heads) == (
        config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]
    )
    assert card.trained_tokens == config["max_position_embeddings"] - 2  # trained on every position it has


def test_lookup_by_hub_id_in_any_case_and_by_old_alias_but_never_by_path():
    assert model_card("AndreasMadsen/Efficient_MLM_m0.40").name == EFFICIENT_MLM
    assert model_card("roberta-base").name == "FacebookAI/roberta-base"
    assert model_card("/models/efficient_mlm_m0.40") is None
    assert model_card("someone/else") is None and model_card("") is None


def test_the_length_notice_counts_the_tokens_past_the_trained_length():
    card = model_card(EFFICIENT_MLM)
    assert card.length_notice(128) is None
    assert card.length_notice(168) == (
        "efficient_mlm_m0.40 was trained on 128-token sequences; tokens beyond 128 "
        "(here 40 of them) are outside what it learned."
    )


# --- the notice on task results: a tiny model with room for 198 tokens, named like the 128-token preset


@pytest.fixture
def named_like_the_preset(loaded):
    def make(task="mlm", **config):
        model = loaded("pre-ln", task, max_position_embeddings=200, **config)
        return dataclasses.replace(model, name=EFFICIENT_MLM)

    return make


LONG = "The cat sat on the mat and looked at the dog. " * 14  # about 170 tokens


def past_training(notices):
    return [n for n in notices if "was trained on 128-token sequences" in n]


def test_fill_mask_past_the_trained_length_runs_and_says_how_far_past(named_like_the_preset):
    model = named_like_the_preset()
    result = fill_mask(model, "The <mask> sat. " + LONG)
    beyond = len(result.trace.tokens) - 128
    assert beyond > 0 and len(result.trace.tokens) <= model.max_tokens  # not cut, not refused
    assert past_training(result.notices) == [
        f"efficient_mlm_m0.40 was trained on 128-token sequences; tokens beyond 128 (here {beyond} of them) "
        "are outside what it learned."
    ]
    assert past_training(result.trace.notices) == past_training(result.notices)


def test_an_input_within_the_trained_length_gets_no_notice(named_like_the_preset):
    assert past_training(fill_mask(named_like_the_preset(), "The <mask> sat on the mat.").notices) == []


def test_classify_past_the_trained_length_says_so(named_like_the_preset):
    labels = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}
    result = classify(named_like_the_preset("classification", **labels), LONG)
    assert len(past_training(result.notices)) == 1


def test_question_answering_past_the_trained_length_says_so(named_like_the_preset):
    result = answer(named_like_the_preset("qa"), "Who sat on the mat?", LONG, max_seq_len=190)
    assert len(past_training(result.notices)) == 1
    assert past_training(result.trace.notices) == past_training(result.notices)


def test_a_model_the_catalog_does_not_know_gets_no_notice(loaded):
    model = loaded("pre-ln", max_position_embeddings=200)  # named by its path: no card
    assert past_training(fill_mask(model, "The <mask> sat. " + LONG).notices) == []
