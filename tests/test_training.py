"""Tokenizer training, masked-LM training/resume and evaluation on a tiny inline corpus."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, RobertaTokenizer

from rpln_core import pretraining as pt
from rpln_core.synthetic import SAMPLE_TEXT
from scripts.train_mlm import TrainConfig, build_mlm, train
from scripts.train_tokenizer import train_tokenizer

torch.set_num_threads(1)

CORPUS = SAMPLE_TEXT + [
    "The senate and the house met to discuss the budget of the nation.",
    "And the LORD spake unto Moses, saying, Speak unto the children of Israel.",
    "dog: a member of the genus Canis that has been domesticated by man.",
    "This film was a joy to watch, with great acting and a clever plot.",
]


def read_log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The tiny corpus repeated, as pretrain_train.txt plus a held-out pretrain_test.txt."""
    directory = tmp_path_factory.mktemp("data")
    (directory / "pretrain_train.txt").write_text("\n".join(CORPUS * 6) + "\n")
    (directory / "pretrain_test.txt").write_text("\n".join(CORPUS[:4]) + "\n")
    return directory / "pretrain_train.txt"


@pytest.fixture(scope="module")
def tokenizer_dir(corpus, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([corpus], directory, vocab_size=350, model_max_length=32)
    return directory


def tiny_config(corpus: Path, tokenizer_dir: Path, out: Path, **overrides) -> TrainConfig:
    """Hidden 32, 2 layers: trains in well under a second per few dozen steps on one thread."""
    config = TrainConfig(
        data=corpus,
        eval_data=None,
        tokenizer=tokenizer_dir,
        out=out,
        steps=30,
        batch_size=8,
        lr=3e-3,
        warmup_steps=3,
        device="cpu",
        save_every=10,
        log_every=1000,
        threads=1,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_length=32,
        eval_max_blocks=50,
        cache=out / "cache",
    )
    return replace(config, **overrides)


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_reloads_as_roberta_with_trained_size(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    trained = json.loads((tokenizer_dir / "vocab.json").read_text())
    assert isinstance(tokenizer, RobertaTokenizer)
    assert len(tokenizer) == len(trained) > 5  # not the silent 5-token vocabulary
    assert [trained[t] for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert (tokenizer_dir / "merges.txt").is_file() and tokenizer.model_max_length == 32


def test_mask_swallows_preceding_space_and_text_round_trips(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tokenizer("the <mask>.")["input_ids"]
    assert ids == tokenizer("the<mask>.")["input_ids"]  # lstrip: the space goes with <mask>
    assert tokenizer.mask_token_id in ids and "Ġ" not in tokenizer.convert_ids_to_tokens(ids)
    text = "The senate met, and the dog ran 42 miles!"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


# ---------------------------------------------------------------- packing, masking, evaluation


def test_pack_blocks_wraps_and_pads():
    blocks = pt.pack_blocks([[5, 6, 7], [8, 9]], max_length=6, bos_id=0, eos_id=2, pad_id=1)
    assert blocks.ids.tolist() == [[0, 5, 6, 7, 2, 2], [0, 8, 9, 2, 2, 1]]
    assert blocks.lengths.tolist() == [6, 5]
    _, attention_mask = blocks.batch([1])
    assert attention_mask.tolist() == [[1, 1, 1, 1, 1]]


def test_masking_skips_specials_and_follows_80_10_10():
    ids = torch.randint(5, 300, (64, 64))
    ids[:, 0], ids[:, -1] = 0, 2
    inputs, labels = pt.mask_tokens(
        ids, special_ids=[0, 1, 2, 3, 4], mask_id=4, vocab_size=300, generator=torch.Generator().manual_seed(0)
    )
    chosen = labels != pt.IGNORE_INDEX
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    assert 0.13 < chosen.float().mean() < 0.17
    assert 0.75 < (inputs[chosen] == 4).float().mean() < 0.85
    assert (inputs[chosen] >= 5).logical_or(inputs[chosen] == 4).all()  # random swaps are never special


def test_unigram_baseline_predicts_the_most_frequent_token(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    the = tokenizer.convert_tokens_to_ids("Ġthe")
    train_blocks = pt.pack_blocks([[the] * 20 + [the + 1]], 32, 0, 2, 1)
    counts = pt.unigram_counts(train_blocks, len(tokenizer), pt.tokenizer_special_ids(tokenizer))
    assert counts[the] == 20 and counts[0] == counts[2] == 0
    test_blocks = pt.pack_blocks([[the] * 200], 64, 0, 2, 1)
    result = pt.unigram_baseline(counts, tokenizer, test_blocks, mask_seed=3)
    assert result.accuracy == 1.0 and result.masked_tokens > 0
    expected = (len(tokenizer) - 5 + 21) / 21  # add-one smoothing over regular tokens
    assert result.perplexity == pytest.approx(expected)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("arch", ["pre-ln", "post-ln"])
def test_training_lowers_loss_and_logs_layer_norms(arch, corpus, tokenizer_dir, tmp_path):
    config = tiny_config(
        corpus, tokenizer_dir, tmp_path / arch, arch=arch, eval_data=corpus.with_name("pretrain_test.txt")
    )
    result = train(config)
    rows = read_log(tmp_path / arch / "train_log.csv")
    losses = [float(row["loss"]) for row in rows]
    assert result.step == 30 and not result.diverged and len(rows) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert {"step", "lr", "grad_norm_total", "grad_norm_layer_0", "grad_norm_layer_1"} <= set(rows[0])
    assert all(float(row["grad_norm_layer_1"]) > 0 for row in rows)
    model = AutoModelForMaskedLM.from_pretrained(result.model_dir)
    assert (result.model_dir / "model.safetensors").is_file() and (result.model_dir / "vocab.json").is_file()
    assert model.config.num_hidden_layers == 2 and model.config.max_position_embeddings == 34
    figures = json.loads((tmp_path / arch / "eval.json").read_text())
    assert figures["model"]["masked_tokens"] == figures["unigram"]["masked_tokens"] > 0


def test_resume_continues_with_identical_losses(corpus, tokenizer_dir, tmp_path):
    straight = tiny_config(corpus, tokenizer_dir, tmp_path / "straight", steps=12, save_every=4)
    train(straight)
    chunked = replace(straight, out=tmp_path / "chunked")
    assert train(replace(chunked, stop_at=5)).step == 5  # the checkpoint at stop holds step 5
    assert train(replace(chunked, resume=True)).step == 12

    straight_rows, chunked_rows = read_log(straight.out / "train_log.csv"), read_log(chunked.out / "train_log.csv")
    assert [row["step"] for row in chunked_rows] == [str(i) for i in range(1, 13)]
    for a, b in zip(straight_rows, chunked_rows, strict=True):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-6, abs=1e-7)
        assert float(a["grad_norm_total"]) == pytest.approx(float(b["grad_norm_total"]), rel=1e-5)


def test_evaluation_is_deterministic_for_a_fixed_mask_seed(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = build_mlm(
        TrainConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=32), len(tokenizer)
    )
    first = pt.evaluate_mlm(model, tokenizer, CORPUS, max_length=32, mask_seed=7)
    second = pt.evaluate_mlm(model, tokenizer, CORPUS, max_length=32, mask_seed=7)
    assert first == second and 0.0 <= first.accuracy <= 1.0 and first.perplexity > 1.0
    assert model.training  # evaluation puts the training mode back


@pytest.mark.parametrize("arch", ["pre-ln", "post-ln"])
def test_masked_only_loss_equals_the_full_hf_loss(arch, tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = TrainConfig(arch=arch, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=32)
    model = build_mlm(config, len(tokenizer)).eval()
    input_ids, attention_mask = pt.pack_texts(tokenizer, CORPUS, 32).batch(range(4))
    inputs, labels = pt.mask_tokens(
        input_ids,
        special_ids=pt.tokenizer_special_ids(tokenizer),
        mask_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        full = model(input_ids=inputs, attention_mask=attention_mask, labels=labels).loss
        assert pt.mlm_loss(model, inputs, attention_mask, labels) == pytest.approx(float(full), rel=1e-5)
