"""QA data from WordNet, sentiment and QA fine-tuning, their metrics, and packaging as bundled models.

Everything runs on tiny models (hidden 32, 2 layers) and inline data, on one thread.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from rpln_core import answer, classify, fill_mask, load_model
from rpln_core.synthetic import build_config, build_model
from scripts import build_qa as qa
from scripts.finetune import (
    FinetuneConfig,
    exact_match,
    f1_score,
    finetune,
    length_grouped_batches,
    load_base,
    normalize_answer,
    qa_features,
    qa_scores,
)
from scripts.package_models import FILL_MASK_SAMPLES, package
from scripts.train_tokenizer import copy_tokenizer_files, train_tokenizer

torch.set_num_threads(1)

# ---------------------------------------------------------------- a WordNet-like sample

NOUNS = [
    (["dog", "domestic_dog"], 'a member of the genus Canis kept by man; occurs in many breeds; "the dog barked"'),
    (["cat", "true_cat"], 'a small domesticated feline with soft fur; "the cat purred"'),
    (["bank"], "sloping land beside a body of water"),
    (["bank", "depository_financial_institution"], "a financial institution that accepts deposits"),
    (["oak", "oak_tree"], "a tree of the genus Quercus bearing acorns"),
    (["river"], "a large natural stream of flowing water"),
    (["house"], "a dwelling that serves as living quarters for a family"),
    (["king", "male_monarch"], "a male sovereign; ruler of a kingdom"),
    (["Paris", "French_capital"], "the capital and largest city of France"),
    (["letter", "missive"], "a written message addressed to a person or organization"),
    (["film", "movie", "picture"], 'a form of entertainment that enacts a story; "the film was long"'),
    (["nation", "country"], "a politically organized body of people under a single government"),
    (["economy"], "the system of production and distribution and consumption"),
    (["budget"], "a summary of intended expenditures along with proposals for financing them"),
    (["wolf"], "any of various predatory carnivorous canine mammals of North America and Eurasia"),
]
VERBS = [
    (["run"], "move fast by using the feet"),
    (["write", "compose"], "produce a literary work; put down in writing"),
    (["laugh", "express_joy"], "produce laughter"),
    (["speak", "talk"], "exchange thoughts; talk with"),
    (["leave", "go_forth"], "go away from a place"),
    (["create", "make"], "make or cause to be or to become"),
]
ADJECTIVES = [
    (["good(a)"], "having desirable or positive qualities especially those suitable for a thing specified"),
    (["bad(a)"], "having undesirable or negative qualities"),
    (["clever", "cagey"], "showing self-interest and shrewdness in dealing with others"),
    (["dull"], "lacking in liveliness or animation"),
    (["funny", "amusing"], "arousing or provoking laughter"),
    (["frugal", "sparing"], "avoiding waste"),
]
ADVERBS = [
    (["quickly", "rapidly"], "with rapid movements"),
    (["slowly", "lento"], "without speed"),
    (["often", "frequently"], "many times at short intervals"),
    (["never", "ne'er"], "not ever; at no time in the past or future"),
    (["here"], "in or at this place; where the speaker or writer is"),
]
SAMPLE = {"data.noun": NOUNS, "data.verb": VERBS, "data.adj": ADJECTIVES, "data.adv": ADVERBS}


def wordnet_record(offset: int, pos: str, words: list[str], gloss: str) -> str:
    """One line in WordNet's data-file format: offset lex_filenum ss_type w_cnt (word lex_id)* p_cnt | gloss."""
    word_fields = " ".join(f"{word} 0" for word in words)
    return f"{offset:08d} 05 {pos} {len(words):02x} {word_fields} 000 | {gloss}  \n"


@pytest.fixture(scope="module")
def wordnet_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("wordnet")
    for name, rows in SAMPLE.items():
        pos = name.removeprefix("data.")[0]
        header = "  1 This software and database is being provided to you, the LICENSEE, by Princeton\n"
        lines = [wordnet_record(i, pos, words, gloss) for i, (words, gloss) in enumerate(rows)]
        (directory / name).write_text(header + "".join(lines), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def entries(wordnet_dir) -> list[qa.Entry]:
    return qa.read_entries(wordnet_dir)


def build(entries, seed: int = 0, train_size: int = 100) -> qa.QASplits:
    """Many more targets asked for than the sample has: every eligible entry becomes a question."""
    return qa.build_qa(entries, train_size=train_size, test_size=20, seed=seed, test_fraction=0.3)


# ---------------------------------------------------------------- the QA builder


def test_wordnet_records_become_entries_with_definition_and_first_clause(entries):
    dog = next(e for e in entries if e.lemmas[0] == "dog")
    assert dog.lemmas == ("dog", "domestic dog") and dog.pos == "noun"
    assert dog.definition == "a member of the genus Canis kept by man; occurs in many breeds"  # example dropped
    assert dog.answer == "a member of the genus Canis kept by man"
    assert dog.text == "dog, domestic dog: a member of the genus Canis kept by man; occurs in many breeds."
    assert next(e for e in entries if e.answer.startswith("having desirable")).lemmas == ("good",)  # "(a)" gone
    assert len(entries) == sum(map(len, SAMPLE.values()))  # the licence header is not an entry


def test_every_answer_sits_exactly_at_its_offset(entries):
    splits = build(entries)
    examples = splits.train + splits.test
    assert splits.train and splits.test
    for example in examples:
        start = example.answer_start
        assert example.context[start : start + len(example.answer)] == example.answer
        assert example.context[:start].endswith(": ")  # the answer is a whole definition's first clause
        assert 3 <= example.entries <= 6 and example.context.count(". ") + 1 >= example.entries
        assert example.lemma in example.question
        assert qa.MIN_ANSWER_WORDS <= len(example.answer.split()) <= qa.MAX_ANSWER_WORDS


def test_the_question_word_heads_exactly_one_entry_of_its_context(entries):
    """Polysemous "bank" has two senses: a context never holds both, so every question has one answer."""
    by_answer = {e.answer: e for e in entries}
    for example in build(entries).train:
        target = by_answer[example.answer]
        heads = [entry for entry in entries if entry.text in example.context]
        assert [h for h in heads if qa.lemma_key(example.lemma) in h.keys] == [target]


def test_split_is_by_lemma_no_test_word_is_ever_a_training_target(entries):
    splits = build(entries)
    by_answer = {e.answer: e for e in entries}
    test_words = {qa.lemma_key(e.lemma) for e in splits.test}
    train_target_words = set().union(*(by_answer[e.answer].keys for e in splits.train))
    assert test_words and not test_words & train_target_words
    train_targets, test_targets = qa.split_targets(entries, seed=0, test_fraction=0.3)
    held_out = {qa.lemma_key(lemma) for _, lemmas in test_targets for lemma in lemmas}
    assert all(not entry.keys & held_out for entry, _ in train_targets)  # synonyms and other senses too


def test_builder_is_deterministic_by_seed(entries):
    assert build(entries, seed=3) == build(entries, seed=3)
    assert build(entries, seed=3).train != build(entries, seed=4).train


def test_first_entry_baseline_reads_the_first_definition():
    context = "dog, hound: a domesticated canine; kept as a pet. cat: a small feline."
    assert qa.first_entry_answer(context) == "a domesticated canine"
    assert qa.first_entry_answer("U.S.A.: a country in North America. oak: a tree.") == "a country in North America"


# ---------------------------------------------------------------- EM and F1


def test_squad_normalisation_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The Cat, an  animal!") == "cat animal"
    assert exact_match("the cat", "Cat.") == 1.0 and exact_match("cat", "cats") == 0.0


def test_f1_counts_shared_tokens():
    # prediction [big, red, dog] vs gold [red, dog]: precision 2/3, recall 1 -> F1 0.8
    assert f1_score("a big red dog", "the red dog") == pytest.approx(0.8)
    assert f1_score("dog dog", "dog") == pytest.approx(2 * 0.5 * 1 / 1.5)  # repeated tokens count once each
    assert f1_score("blue", "red dog") == 0.0
    assert f1_score("", "") == 1.0 and f1_score("the", "dog") == 0.0  # only an article: empty after normalising
    assert qa_scores(["red dog", "cat"], ["the red dog", "dog"]) == {"exact_match": 50.0, "f1": 50.0}


# ---------------------------------------------------------------- fine-tuning

SENTIMENT = [
    ("a good , funny and clever film", "positive"),
    ("great acting and a clever plot , a joy to watch", "positive"),
    ("funny , moving and good", "positive"),
    ("a joy : good fun from start to end", "positive"),
    ("a dull and boring mess", "negative"),
    ("bad acting , dull plot , a waste of time", "negative"),
    ("boring , bad and far too long", "negative"),
    ("a mess : dull from start to end", "negative"),
]


def test_an_epoch_uses_every_example_once_in_batches_of_similar_length():
    lengths = [random.Random(i).randint(5, 120) for i in range(1000)]
    batches = length_grouped_batches(lengths, 32, random.Random(0))
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    assert max(map(len, batches)) == 32 and batches == length_grouped_batches(lengths, 32, random.Random(0))

    def padded(batches):
        return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)

    shuffled = list(range(1000))
    random.Random(0).shuffle(shuffled)
    assert padded(batches) < 0.7 * padded([shuffled[i : i + 32] for i in range(0, 1000, 32)])


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, entries) -> Path:
    """sentiment_{train,test}.jsonl and qa_{train,test}.jsonl, as the real data/ folder holds them."""
    directory = tmp_path_factory.mktemp("data")
    rows = [{"text": text, "label": label} for text, label in SENTIMENT]
    write_jsonl(directory / "sentiment_train.jsonl", rows * 3)
    write_jsonl(directory / "sentiment_test.jsonl", rows[:2] + rows[-2:])
    splits = build(entries, train_size=40)
    qa.write_examples(directory / "qa_train.jsonl", splits.train)
    qa.write_examples(directory / "qa_test.jsonl", splits.test)
    return directory


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, data_dir, entries) -> Path:
    """A tiny pre-LN MLM saved as train_mlm saves it: safetensors plus RoBERTa's tokenizer files."""
    run = tmp_path_factory.mktemp("mlm-run")
    corpus = run / "corpus.txt"
    corpus.write_text("\n".join([e.text for e in entries] + [t for t, _ in SENTIMENT] + list(FILL_MASK_SAMPLES)))
    tokenizer_dir = run / "tokenizer"
    report = train_tokenizer([corpus], tokenizer_dir, vocab_size=500, model_max_length=128)
    config = build_config(
        "pre-ln", report.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=130, initializer_range=0.2,  # peaked predictions: no near-ties after fp16
    )
    model = build_model("pre-ln", "mlm", config, seed=0)
    model.save_pretrained(run / "model", safe_serialization=True)
    copy_tokenizer_files(tokenizer_dir, run / "model")
    (run / "train_log.csv").write_text("step,loss,lr\n1,9.0,0.001\n2,8.5,0.001\n")
    return run / "model"


def quick(task: str, base: Path, data: Path, out: Path, **overrides) -> FinetuneConfig:
    config = FinetuneConfig(
        task=task, base=base, data=data, out=out, epochs=6, batch_size=4, lr=3e-3, seed=0, threads=1, log_every=1000
    )
    return replace(config, **overrides)


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def sentiment_run(base_dir, data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft-sentiment")
    finetune(quick("sentiment", base_dir, data_dir, out))
    return out


@pytest.fixture(scope="module")
def qa_run(base_dir, data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft-qa")
    finetune(quick("qa", base_dir, data_dir, out, epochs=2, max_train=30))
    return out


def test_sentiment_finetune_learns_and_saves_a_negative_positive_classifier(sentiment_run):
    rows = read_log(sentiment_run / "train_log.csv")
    losses = [float(row["loss"]) for row in rows]
    assert len(rows) == 36 and set(rows[0]) == {"step", "loss", "lr", "elapsed_s"}  # 6 epochs of 24 / 4
    assert float(rows[0]["lr"]) < float(rows[5]["lr"]) and float(rows[-1]["lr"]) < float(rows[5]["lr"])  # warmup, decay
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6
    loaded = load_model(str(sentiment_run / "model"))
    assert loaded.task == "classification" and loaded.architecture == "pre-ln"
    assert loaded.config.id2label == {0: "negative", 1: "positive"}
    assert {label.label for label in classify(loaded, "a dull film").labels} == {"negative", "positive"}
    figures = json.loads((sentiment_run / "eval.json").read_text())
    assert figures["test_examples"] == 4 and 0.0 <= figures["model"]["accuracy"] <= 1.0
    assert figures["majority_baseline"]["accuracy"] == 0.5  # train is balanced: either label scores half


def test_qa_finetune_saves_a_model_that_answers_from_the_context(qa_run, data_dir):
    loaded = load_model(str(qa_run / "model"))
    assert loaded.task == "qa" and loaded.head_is_trained("qa_outputs")
    example = json.loads((data_dir / "qa_test.jsonl").read_text().splitlines()[0])
    found = answer(loaded, example["question"], example["context"]).answers[0]
    assert found.answer and example["context"][found.start : found.end] == found.answer
    figures = json.loads((qa_run / "eval.json").read_text())
    available = len((data_dir / "qa_train.jsonl").read_text().splitlines())  # under --max-train 30: all used
    assert figures["train_examples"] + figures["train_examples_dropped"] == available
    assert len(read_log(qa_run / "train_log.csv")) == figures["steps"] == -(-2 * figures["train_examples"] // 4)
    assert set(figures["model"]) == {"exact_match", "f1"} and 0 <= figures["model"]["f1"] <= 100
    assert 0 <= figures["first_entry_baseline"]["exact_match"] <= 100


def test_qa_training_targets_are_the_answer_tokens(base_dir, data_dir):
    loaded = load_base(quick("qa", base_dir, data_dir, data_dir / "unused"))
    examples = [json.loads(line) for line in (data_dir / "qa_train.jsonl").read_text().splitlines()[:10]]
    features = qa_features(loaded, examples)
    assert features.dropped == 0 and len(features) == 10
    for ids, (start, end), example in zip(features.input_ids, features.targets, examples):
        decoded = loaded.tokenizer.decode(ids[start : end + 1]).strip()
        assert decoded == example["answer"]


# ---------------------------------------------------------------- packaging


def test_package_writes_fp16_models_that_load_and_predict_like_their_sources(base_dir, sentiment_run, tmp_path):
    dest = tmp_path / "models"
    report = package({"tiny-mlm": base_dir, "tiny-sentiment": sentiment_run / "model"}, dest=dest)
    assert report.problems == []
    for check in report.models:
        assert check.dtype == "float16" and check.same_predictions and check.missing_files == []
        with safe_open(dest / check.name / "model.safetensors", "pt") as weights:
            assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float16}
    mlm = load_model(str(dest / "tiny-mlm"))
    assert mlm.config.architectures == ["RobertaPreLayerNormForMaskedLM"]
    assert next(mlm.model.parameters()).dtype == torch.float32  # upcast on load, as the app computes
    source = load_model(str(base_dir))
    def top1(loaded, text):
        return fill_mask(loaded, text, top_k=1).predictions[0][0].token

    assert all(top1(mlm, text) == top1(source, text) for text in FILL_MASK_SAMPLES)
    curves = sorted(p.name for p in (dest / "curves").iterdir())
    assert curves == sorted([f"{sentiment_run.name}.csv", f"{base_dir.parent.name}.csv"])  # one per run, named by it


def test_package_reports_a_folder_over_its_size_budget(base_dir, tmp_path):
    report = package({"tiny-mlm": base_dir}, dest=tmp_path / "models", limit_mb=0.01)
    assert len(report.problems) == 1 and "over the" in report.problems[0]
