"""A checkpoint loads only whole and readable; every refusal names the real cause, and the name the user typed."""

import fnmatch
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rpln_core import RplnError, fill_mask
from rpln_core.capture import run_body
from rpln_core.load import load_model

LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 1422341234\n"
)


def copy_of(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def rewrite_weights(directory: Path, change) -> Path:
    """Rewrite the checkpoint's model.safetensors as change(state dict) -> state dict."""
    file = directory / "model.safetensors"
    save_file(change(load_file(file)), file, metadata={"format": "pt"})
    return directory


def without(*fragments):
    return lambda state: {k: v for k, v in state.items() if not any(f in k for f in fragments)}


def refusal(directory) -> str:
    with pytest.raises(RplnError) as error:
        load_model(str(directory))
    return error.value.message


# --- missing weights: the encoder must be whole; a missing head is the only thing let through


def test_a_checkpoint_missing_one_layer_is_refused_and_the_layer_named(checkpoint_dir, tmp_path):
    directory = rewrite_weights(copy_of(checkpoint_dir("pre-ln"), tmp_path / "ckpt"), without("encoder.layer.1."))
    message = refusal(directory)
    assert "lacks the weights of layer 1 (16 tensors)" in message  # 2 LayerNorms and 6 linear layers, each w and b
    assert "Layers count from 0, as in the weight names (encoder.layer.N)." in message
    assert "random values" in message and "untrained" not in message


@pytest.mark.parametrize("arch", ["pre-ln", "post-ln"])
def test_missing_parts_of_the_encoder_are_summarised_in_one_sentence(checkpoint_dir, tmp_path, arch):
    directory = copy_of(checkpoint_dir(arch), tmp_path / "ckpt")
    rewrite_weights(directory, without("word_embeddings", "encoder.layer.1.", "encoder.layer.2."))
    assert "the embeddings (1 tensor) and layers 1–2 (32 tensors)" in refusal(directory)


def test_a_missing_final_layernorm_is_named(checkpoint_dir, tmp_path):
    directory = rewrite_weights(
        copy_of(checkpoint_dir("pre-ln"), tmp_path / "ckpt"), without("roberta_prelayernorm.LayerNorm.")
    )
    assert "lacks the weights of the final LayerNorm (2 tensors)" in refusal(directory)


def test_a_checkpoint_holding_only_its_head_is_refused_for_its_encoder_not_its_head(checkpoint_dir, tmp_path):
    """Before, every tensor missing read as "an untrained fill-mask head", blaming the one part that was there."""
    head_only = lambda state: {k: v for k, v in state.items() if k.startswith("lm_head")}  # noqa: E731
    directory = rewrite_weights(copy_of(checkpoint_dir("pre-ln"), tmp_path / "ckpt"), head_only)
    message = refusal(directory)
    assert "none of the encoder's weights" in message and "head" in message and "untrained" not in message


def test_weights_saved_under_another_architectures_names_are_called_a_mismatch(checkpoint_dir, tmp_path):
    directory = rewrite_weights(
        copy_of(checkpoint_dir("pre-ln"), tmp_path / "ckpt"),
        lambda state: {k.replace("roberta_prelayernorm.", "bert."): v for k, v in state.items()},
    )
    message = refusal(directory)
    assert "none of the weights a RobertaPreLayerNormForMaskedLM reads" in message
    assert "'bert." in message and "different models" in message


def test_a_missing_head_alone_still_loads_and_is_refused_as_untrained_when_used(checkpoint_dir, tmp_path):
    directory = rewrite_weights(copy_of(checkpoint_dir("post-ln"), tmp_path / "ckpt"), without("lm_head.dense."))
    model = load_model(str(directory))
    assert model.missing_weights == ("lm_head.dense.bias", "lm_head.dense.weight")
    with pytest.raises(RplnError, match="untrained fill-mask head: the checkpoint's encoder is complete"):
        fill_mask(model, "The cat sat on the <mask>.")


def test_weights_of_another_size_are_refused_naming_the_tensor_and_both_shapes(checkpoint_dir, tmp_path):
    """transformers itself raises "see the report above"; the load asks for the report and says what it holds."""
    def narrower_embeddings(state):
        return {k: v[:, :16].contiguous() if k.endswith("word_embeddings.weight") else v for k, v in state.items()}

    directory = rewrite_weights(copy_of(checkpoint_dir("pre-ln"), tmp_path / "ckpt"), narrower_embeddings)
    message = refusal(directory)
    assert "word_embeddings.weight is 400×16 in the weight file but 400×32 in the model" in message
    assert "1 tensor differs" in message and "different models" in message


def test_a_tokenizer_larger_than_the_embeddings_is_refused_before_any_pass(checkpoint_dir, tmp_path):
    """Else the first token id past the embeddings fails deep in the forward with "index out of range"."""
    import json

    directory = copy_of(checkpoint_dir("pre-ln"), tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "vocab_size": 300}))
    rewrite_weights(directory, lambda state: {
        k: v[:300].contiguous() if "word_embeddings" in k or k.startswith("lm_head.") and v.shape[:1] == (400,) else v
        for k, v in state.items()
    })
    assert "tokenizer of 400 tokens but embeddings for only 300" in refusal(directory)


# --- unreadable weights (issue 11)


def test_a_git_lfs_pointer_in_place_of_the_weights_says_to_run_git_lfs_pull(checkpoint_dir, tmp_path):
    directory = copy_of(checkpoint_dir("pre-ln"), tmp_path / "ckpt")
    (directory / "model.safetensors").write_text(LFS_POINTER)
    message = refusal(directory)
    assert "model.safetensors is a Git LFS pointer" in message
    assert "weights were not fetched" in message and "`git lfs pull`" in message


def test_a_git_lfs_pointer_in_place_of_pickled_weights_is_recognised_too(checkpoint_dir, tmp_path):
    directory = copy_of(checkpoint_dir("pre-ln"), tmp_path / "ckpt")
    (directory / "model.safetensors").unlink()
    (directory / "pytorch_model.bin").write_text(LFS_POINTER)
    assert "pytorch_model.bin is a Git LFS pointer" in refusal(directory)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupted_safetensors_file_is_called_unreadable(checkpoint_dir, tmp_path, damage):
    directory = copy_of(checkpoint_dir("pre-ln"), tmp_path / "ckpt")
    file = directory / "model.safetensors"
    file.write_bytes(file.read_bytes()[:5000] if damage == "truncated" else b"\x07not a tensor file" * 64)
    message = refusal(directory)
    assert "model.safetensors is not readable safetensors" in message
    assert "damaged or was not completely downloaded" in message


def test_a_corrupted_pickle_is_called_unreadable_not_a_crash(bin_checkpoint):
    file = bin_checkpoint / "pytorch_model.bin"
    file.write_bytes(file.read_bytes()[:3000])
    assert "pytorch_model.bin is not readable as plain PyTorch weights" in refusal(bin_checkpoint)


def leave_a_mark(path: str) -> None:
    """What a malicious pickle would run on load: here it only writes a file, so the test can see it did not run."""
    Path(path).write_text("ran")


class Payload:
    def __init__(self, mark: Path):
        self.mark = str(mark)

    def __reduce__(self):
        return (leave_a_mark, (self.mark,))


def test_pickled_code_in_place_of_weights_is_never_run(bin_checkpoint, tmp_path):
    mark = tmp_path / "mark"
    key = "roberta_prelayernorm.embeddings.word_embeddings.weight"
    torch.save({key: Payload(mark)}, bin_checkpoint / "pytorch_model.bin")
    assert "pickled objects besides tensors" in refusal(bin_checkpoint)
    assert not mark.exists()


def test_a_directory_without_weights_says_which_files_are_read(checkpoint_dir, tmp_path):
    directory = copy_of(checkpoint_dir("pre-ln"), tmp_path / "ckpt")
    (directory / "model.safetensors").unlink()
    (directory / "tf_model.h5").write_bytes(b"\x89HDF\r\n")
    message = refusal(directory)
    assert "has no weights: it holds neither model.safetensors nor pytorch_model.bin" in message
    assert "TensorFlow and Flax weights are not read" in message


# --- messages name the model as typed, never the path it resolved to (issue 11)


def test_messages_use_the_name_as_typed_not_the_resolved_path(checkpoint_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RplnError) as error:
        load_model("~/empty")
    assert error.value.message.startswith("'~/empty' has no config.json")
    assert str(tmp_path) not in error.value.message

    copy_of(checkpoint_dir("pre-ln"), tmp_path / "broken")
    (tmp_path / "broken" / "model.safetensors").write_text(LFS_POINTER)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RplnError) as error:
        load_model("./broken")
    assert error.value.message.startswith("'./broken': model.safetensors is a Git LFS pointer")
    assert str(tmp_path) not in error.value.message


def test_a_wrong_model_type_is_reported_under_the_typed_name(checkpoint_dir, tmp_path, monkeypatch):
    import json

    directory = copy_of(checkpoint_dir("pre-ln"), tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RplnError, match=r"^'ckpt/' is a 'gpt2' model"):
        load_model("ckpt/")


# --- .bin-only checkpoints


@pytest.fixture
def bin_checkpoint(checkpoint_dir, tmp_path) -> Path:
    """The tiny pre-LN checkpoint with its weights as pytorch_model.bin only, saved as older checkpoints were.

    transformers 5 ignores save_pretrained(safe_serialization=False) and writes safetensors regardless, so the
    state dict is saved with torch.save under the name transformers looks for."""
    directory = copy_of(checkpoint_dir("pre-ln"), tmp_path / "bin-only")
    state = load_file(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    torch.save(state, directory / "pytorch_model.bin")
    return directory


def test_a_checkpoint_with_only_pickled_weights_loads_and_predicts_as_its_safetensors_twin(loaded, bin_checkpoint):
    model = load_model(str(bin_checkpoint))
    assert not model.missing_weights
    text = "The cat sat on the <mask>."
    assert fill_mask(model, text).to_pipeline() == fill_mask(loaded("pre-ln"), text).to_pipeline()


class FakeHub:
    """snapshot_download over a local folder standing for a Hub repository: it copies the files matching
    allow_patterns into one snapshot folder, as the cache does, and records what was asked for."""

    def __init__(self, repository: Path, cache: Path):
        self.repository, self.cache, self.requests = repository, cache, []

    def snapshot_download(self, repo_id, allow_patterns=None, local_files_only=False, **kwargs):
        self.requests.append(list(allow_patterns or ["*"]))
        self.cache.mkdir(exist_ok=True)
        for file in self.repository.iterdir():
            if any(fnmatch.fnmatch(file.name, pattern) for pattern in allow_patterns or ["*"]):
                shutil.copy(file, self.cache / file.name)
        return str(self.cache)


def test_a_hub_repository_holding_only_pickled_and_tensorflow_weights_is_fetched_and_loaded(
    bin_checkpoint, tmp_path, monkeypatch
):
    """The efficient_mlm repos' main branch holds pytorch_model.bin and tf_model.h5 (safetensors only in a PR)."""
    import huggingface_hub

    (bin_checkpoint / "tf_model.h5").write_bytes(b"\x89HDF\r\n" + bytes(64))
    hub = FakeHub(bin_checkpoint, tmp_path / "snapshot")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr("rpln_core.load.hub_reachable", lambda: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = load_model("andreasmadsen/efficient_mlm_m0.40")
    assert model.source == "hub" and model.name == "andreasmadsen/efficient_mlm_m0.40"
    fetched = sorted(p.name for p in (tmp_path / "snapshot").iterdir())
    assert "pytorch_model.bin" in fetched and "tf_model.h5" not in fetched
    assert len(hub.requests) == 2  # the pickled weights are asked for only once no safetensors came


# --- transformers' own integration numbers, when the real checkpoint is already on this machine

EFFICIENT_MLM = "andreasmadsen/efficient_mlm_m0.40"


def cached_efficient_mlm() -> bool:
    """Whether config and weights of EFFICIENT_MLM are in the local Hugging Face cache (no network asked)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(file):
        return isinstance(try_to_load_from_cache(EFFICIENT_MLM, file), str)

    return cached("config.json") and (cached("model.safetensors") or cached("pytorch_model.bin"))


@pytest.mark.skipif(not cached_efficient_mlm(), reason=f"{EFFICIENT_MLM} is not in the local Hugging Face cache")
def test_efficient_mlm_reproduces_transformers_integration_slices(monkeypatch):
    """tests/models/roberta_prelayernorm/test_modeling_roberta_prelayernorm.py in transformers, to 1e-4."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(EFFICIENT_MLM)
    input_ids = torch.tensor([[0, 31414, 232, 328, 740, 1140, 12695, 69, 46078, 1588, 2]])
    with torch.no_grad():
        logits = model.model(input_ids).logits
    hidden = run_body(model, {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)})
    expected_logits = torch.tensor(
        [[[40.4880, 18.0199, -5.2367], [-1.8877, -4.0885, 10.7085], [-2.2613, -5.6110, 7.2665]]]
    )
    expected_hidden = torch.tensor(
        [[[0.0208, -0.0356, 0.0237], [-0.1569, -0.0411, -0.2626], [0.1879, 0.0125, -0.0089]]]
    )
    assert logits.shape == (1, 11, 50265)
    torch.testing.assert_close(logits[:, :3, :3], expected_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(hidden[:, :3, :3], expected_hidden, atol=1e-4, rtol=1e-4)
