"""A bundled delta rebuilds exactly one model: in memory or as a from_pretrained directory, bit for bit the same,
and only over the exact base it was trained on."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

from rpln_core import deltas
from rpln_core.catalog import BUNDLED_DIR
from rpln_core.errors import RplnError

LABELS = {0: "NN", 1: "VB", 2: "DT"}
LOW_RANK_KEY = "roberta_prelayernorm.encoder.layer.1.attention.self.query.weight"
REPLACED_KEY = "roberta_prelayernorm.encoder.layer.2.intermediate.LayerNorm.weight"


@pytest.fixture
def models_dir(tmp_path, checkpoint_dir):
    """A models/ folder holding a tiny pre-LN MLM as the base, named 'base'."""
    root = tmp_path / "models"
    shutil.copytree(checkpoint_dir("pre-ln", "mlm"), root / "base")
    return root


def target_config(base, architecture: str, **extra) -> dict:
    config = json.loads((base / "config.json").read_text())
    config.update(architectures=[architecture], **extra)
    return config


def write_tagger_delta(models_dir, name="tiny-pos"):
    """A token-classification delta: a new head, one replaced LayerNorm and one rank-2 update."""
    generator = torch.Generator().manual_seed(0)
    config = target_config(
        models_dir / "base", "RobertaPreLayerNormForTokenClassification",
        id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
    )
    hidden = config["hidden_size"]
    full = {
        "classifier.weight": torch.randn(len(LABELS), hidden, generator=generator),
        "classifier.bias": torch.randn(len(LABELS), generator=generator),
        REPLACED_KEY: torch.rand(hidden, generator=generator) + 0.5,
    }
    a, b = torch.randn(2, hidden, generator=generator), torch.randn(hidden, 2, generator=generator)
    low_rank = {LOW_RANK_KEY: (a, b)}
    return deltas.write_delta(
        models_dir / name, base_dir=models_dir / "base", config=config, full=full, low_rank=low_rank
    )


def base_tensor(models_dir, key):
    return deltas.read_safetensors(models_dir / "base" / deltas.BASE_WEIGHTS, "base")[key]


def test_the_materialised_directory_loads_with_transformers_and_equals_the_delta_in_memory(models_dir, tmp_path):
    delta = write_tagger_delta(models_dir)
    in_memory = deltas.build_model(delta)
    out = deltas.materialise(delta, tmp_path / "out")
    loaded = AutoModelForTokenClassification.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    loaded.eval()
    assert type(loaded).__name__ == "RobertaPreLayerNormForTokenClassification"
    assert loaded.config.id2label == LABELS
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    reference = in_memory.state_dict()
    assert set(loaded.state_dict()) == set(reference)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, reference[key]), key
    ids = torch.tensor([[0, 5, 9, 17, 2]])
    assert torch.equal(loaded(input_ids=ids).logits, in_memory(input_ids=ids).logits)
    assert (out / "tokenizer.json").is_file() or (out / "vocab.json").is_file()


def test_the_delta_adds_b_times_a_to_the_base_and_replaces_full_tensors(models_dir):
    delta = write_tagger_delta(models_dir)
    stored = deltas.read_safetensors(delta / deltas.WEIGHTS, "delta")
    state = deltas.build_model(delta).state_dict()
    expected = base_tensor(models_dir, LOW_RANK_KEY).float() + stored[LOW_RANK_KEY + ".lora_B"].float() @ stored[
        LOW_RANK_KEY + ".lora_A"
    ].float()
    assert torch.equal(state[LOW_RANK_KEY], expected.half().float())
    assert torch.equal(state[REPLACED_KEY], stored[REPLACED_KEY].float())
    untouched = "roberta_prelayernorm.encoder.layer.0.attention.self.key.weight"
    assert torch.equal(state[untouched], base_tensor(models_dir, untouched).half().float())


def test_a_causal_delta_keeps_the_decoder_tied_to_the_base_embeddings(models_dir, tmp_path):
    config = target_config(models_dir / "base", "RobertaPreLayerNormForCausalLM", is_decoder=True)
    bias = torch.randn(config["vocab_size"], generator=torch.Generator().manual_seed(1))
    delta = deltas.write_delta(models_dir / "tiny-causal", base_dir=models_dir / "base", config=config,
                               full={"lm_head.bias": bias})
    model = deltas.build_model(delta)
    embeddings = "roberta_prelayernorm.embeddings.word_embeddings.weight"
    assert model.config.is_decoder
    assert torch.equal(model.lm_head.decoder.weight, base_tensor(models_dir, embeddings).half().float())
    out = deltas.materialise(delta, tmp_path / "out")
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    ids = torch.tensor([[0, 5, 9, 17]])
    assert torch.equal(loaded.eval()(input_ids=ids).logits, model(input_ids=ids).logits)


def test_a_changed_base_is_refused_with_a_message_that_names_it(models_dir):
    delta = write_tagger_delta(models_dir)
    weights = models_dir / "base" / deltas.BASE_WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(RplnError, match="trained over another 'base'"):
        deltas.build_model(delta)


def test_a_missing_base_is_refused_with_a_message_that_names_it(models_dir):
    delta = write_tagger_delta(models_dir)
    shutil.rmtree(models_dir / "base")
    with pytest.raises(RplnError, match="delta over 'base'.*put the base model 'base' next to it"):
        deltas.materialise(delta)


def test_a_damaged_delta_file_fails_its_hash_check(models_dir):
    delta = write_tagger_delta(models_dir)
    weights = delta / deltas.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RplnError, match="damaged or was changed"):
        deltas.build_model(delta)


def test_a_delta_that_leaves_a_parameter_uncovered_is_refused_not_left_at_random(models_dir):
    config = target_config(models_dir / "base", "RobertaPreLayerNormForTokenClassification", num_labels=3)
    delta = deltas.write_delta(models_dir / "headless", base_dir=models_dir / "base", config=config, full={})
    with pytest.raises(RplnError, match="neither the base nor the delta holds classifier"):
        deltas.build_model(delta)


def test_a_manifest_cannot_name_a_class_outside_roberta(models_dir):
    delta = write_tagger_delta(models_dir)
    manifest = json.loads((delta / deltas.MANIFEST).read_text())
    manifest["config"]["architectures"] = ["GPT2LMHeadModel"]
    (delta / deltas.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RplnError, match="only RoBERTa"):
        deltas.build_model(delta)


def test_the_cache_is_keyed_by_the_manifest_and_reused(models_dir, tmp_path):
    delta = write_tagger_delta(models_dir)
    first = deltas.materialise(delta, cache_dir=tmp_path / "cache")
    assert first.name == f"tiny-pos-{deltas.cache_key(delta)}"
    stamp = (first / deltas.BASE_WEIGHTS).stat().st_mtime_ns
    assert deltas.materialise(delta, cache_dir=tmp_path / "cache") == first
    assert (first / deltas.BASE_WEIGHTS).stat().st_mtime_ns == stamp  # not written again
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no staging folder left behind
    manifest = json.loads((delta / deltas.MANIFEST).read_text())
    manifest["base_sha256"] = "0" * 64  # another base: another key, so a stale materialisation is never reused
    (delta / deltas.MANIFEST).write_text(json.dumps(manifest))
    assert deltas.cache_key(delta) not in first.name


def test_the_command_line_writes_a_from_pretrained_directory(models_dir, tmp_path, capsys):
    delta = write_tagger_delta(models_dir)
    assert deltas.main(["materialise", str(delta), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [
        "RobertaPreLayerNormForTokenClassification"
    ]
    shutil.rmtree(models_dir / "base")
    assert deltas.main(["materialise", str(delta), "--out", str(tmp_path / "again")]) == 2
    assert "put the base model" in capsys.readouterr().err


BUNDLED_DELTAS = sorted(p.name for p in BUNDLED_DIR.iterdir() if deltas.is_delta_dir(p)) if BUNDLED_DIR.is_dir() else []


@pytest.mark.parametrize("name", BUNDLED_DELTAS)
def test_each_bundled_delta_matches_its_base_and_builds_its_class(name):
    manifest = deltas.read_manifest(BUNDLED_DIR / name)
    model = deltas.build_model(BUNDLED_DIR / name)
    assert type(model).__name__ == manifest.class_name
    assert (BUNDLED_DIR / name / deltas.WEIGHTS).stat().st_size < 3 * 2**20  # a delta, not a whole model
