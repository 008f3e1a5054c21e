"""Loading: by path or Hub id, one backbone per checkpoint, and a clear error for anything we cannot load."""

import json
import time

import pytest
from transformers import BertConfig, BertForMaskedLM

from rpln_core import RplnError, load_model
from rpln_core.load import bundled_models


@pytest.mark.parametrize("arch, body", [("pre-ln", "roberta_prelayernorm"), ("post-ln", "roberta")])
def test_a_checkpoint_directory_loads_as_the_architecture_it_was_saved_with(loaded, arch, body):
    model = loaded(arch)
    assert model.architecture == arch and model.task == "mlm"
    assert model.body is getattr(model.model, body)
    assert model.model.config._attn_implementation == "eager"
    assert model.head_is_trained("lm_head") and not model.head_is_trained("classifier")


def test_the_tokenizer_loads_with_its_whole_vocabulary(loaded, tokenizer):
    """transformers 5 silently builds a 5-token vocabulary from wrong keywords: check the size."""
    model = loaded("pre-ln")
    assert len(model.tokenizer) == len(tokenizer) > 100
    assert model.tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]


def test_all_tasks_of_a_checkpoint_share_one_backbone(loaded):
    model = loaded("pre-ln", "qa")
    encoders = [m for m in model.model.modules() if type(m).__name__.endswith("Encoder")]
    assert len(encoders) == 1


def test_max_tokens_leaves_room_for_robertas_position_offset(loaded):
    assert loaded("pre-ln").max_tokens == 64  # 66 positions, the first two reserved for padding


def test_an_unknown_name_says_what_can_be_loaded(tmp_path):
    with pytest.raises(RplnError, match="neither a bundled model"):
        load_model(str(tmp_path / "missing" / "dir"))
    with pytest.raises(RplnError, match="No model given"):
        load_model("  ")


def test_a_directory_without_config_is_refused(tmp_path):
    with pytest.raises(RplnError, match="no config.json"):
        load_model(str(tmp_path))


def test_a_bert_checkpoint_is_refused_as_the_wrong_architecture(tmp_path, tokenizer):
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    BertForMaskedLM(config).save_pretrained(tmp_path)
    with pytest.raises(RplnError, match="'bert' model"):
        load_model(str(tmp_path))


def test_an_unsupported_head_is_refused(checkpoint_dir, tmp_path):
    import shutil

    shutil.copytree(checkpoint_dir("post-ln"), tmp_path / "pretraining")
    config_file = tmp_path / "pretraining" / "config.json"
    config = json.loads(config_file.read_text())
    config["architectures"] = ["RobertaForPreTraining"]  # BERT's name for a head RoBERTa does not have
    config_file.write_text(json.dumps(config))
    with pytest.raises(RplnError, match="supported: masked LM"):
        load_model(str(tmp_path / "pretraining"))


def test_an_unreachable_hub_fails_fast_and_names_the_bundled_models(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens, nothing leaves the machine
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    started = time.monotonic()
    with pytest.raises(RplnError, match="Hub cannot be reached") as error:
        load_model("andreasmadsen/efficient_mlm_m0.40")
    assert time.monotonic() - started < 10
    assert "Bundled models" in str(error.value)


def test_offline_mode_looks_only_in_the_local_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(RplnError, match="not in the local cache"):
        load_model("FacebookAI/roberta-base")


def test_bundled_models_are_listed_by_directory_name():
    names = bundled_models()
    assert names == sorted(names)
    assert all("/" not in name for name in names)
