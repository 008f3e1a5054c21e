"""The corpus builder on inline samples: cleaning, dedup, deterministic disjoint splits, labels."""

from __future__ import annotations

import json

import pytest

from rpln_core.errors import RplnError
from scripts import build_corpus as bc

INFO = bc.SourceInfo("sample", "sample-pkg", "pypi", "1.0", "MIT", "inline sample")

SPEECH = """Fellow-Citizens of the Senate and House of Representatives:

I embrace with great satisfaction the opportunity which now presents itself.

Thanks.
"""


def sample_lines(n: int) -> list[str]:
    """Distinct lines, enough for both sides of a split."""
    return [f"The nation numbered {i} was at peace with all its neighbours." for i in range(n)]


def test_paragraphs_drop_fragments_and_blank_lines():
    assert bc.paragraphs(SPEECH) == [
        "Fellow-Citizens of the Senate and House of Representatives:",
        "I embrace with great satisfaction the opportunity which now presents itself.",
    ]


def test_imdb_breaks_and_entities_become_paragraphs():
    review = "A great film &amp; a sad one.<br /><br />I would  watch it again."
    assert bc.html_paragraphs(review) == ["A great film & a sad one.", "I would watch it again."]


def test_verse_markers_are_stripped():
    text = "1:14 And God said, Let there be lights: 1:15 And let them be for lights "
    assert bc.strip_verse_markers(text) == "And God said, Let there be lights: And let them be for lights"


def test_wordnet_record_becomes_words_and_gloss():
    record = '02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 000 | a member of the genus Canis; "the dog"  \n'
    assert (
        bc.wordnet_gloss_line(record) == 'dog, domestic dog, Canis familiaris: a member of the genus Canis; "the dog"'
    )
    adjective = "00001740 00 a 01 able(a) 0 000 | having the necessary means\n"
    assert bc.wordnet_gloss_line(adjective) == "able: having the necessary means"
    assert bc.wordnet_gloss_line("  1 This software and database is being provided\n") is None


def test_deduplication_uses_normalised_text_across_sources():
    seen: set[str] = set()
    first = bc.deduplicate(["The Cat sat.", "the  cat SAT.", "A dog ran."], seen)
    second = bc.deduplicate(["a dog ran.", "New line here."], seen)
    assert first == ["The Cat sat.", "A dog ran."]
    assert second == ["New line here."]


def test_split_is_deterministic_disjoint_and_complete():
    lines = sample_lines(400)
    train, test = bc.split_by_hash(lines, 0.2)
    again_train, again_test = bc.split_by_hash(list(reversed(lines)), 0.2)
    assert set(train).isdisjoint(test) and len(train) + len(test) == len(lines)
    assert set(again_train) == set(train) and set(again_test) == set(test)  # order-independent
    assert 40 < len(test) < 120  # about 20%


def test_labels_map_to_names():
    assert [bc.sentiment_label(v) for v in (0, "1", 1)] == ["negative", "positive", "positive"]
    with pytest.raises(RplnError):
        bc.sentiment_label(2)


def test_missing_package_error_names_it_and_how_to_install():
    with pytest.raises(RplnError, match="'no-such-corpus-pkg'.*pip install -r requirements-train.txt"):
        bc.pypi_info("no-such-corpus-pkg", "sample", "nothing")


def test_build_corpus_writes_every_output(tmp_path):
    duplicate = sample_lines(3)[0].upper()
    pretrain = [
        bc.PretrainSource(INFO, sample_lines(200)),
        bc.PretrainSource(
            bc.SourceInfo("other", "other-pkg", "debian", "2", "X", "more"), [duplicate, "Another fresh line of text."]
        ),
    ]
    examples = [bc.LabelledText(f"movie {i} was fine .", bc.sentiment_label(i % 2)) for i in range(50)]
    sentiment = bc.SentimentSource(INFO, examples + [bc.LabelledText("MOVIE 0 was fine .", "positive")])

    report = bc.build_corpus(tmp_path, pretrain, sentiment, test_fraction=0.2, sentiment_test_fraction=0.2)

    train = (tmp_path / "pretrain_train.txt").read_text().splitlines()
    test = (tmp_path / "pretrain_test.txt").read_text().splitlines()
    assert len(train) + len(test) == 201 and set(train).isdisjoint(test)
    rows = [json.loads(line) for name in ("train", "test") for line in (tmp_path / f"sentiment_{name}.jsonl").open()]
    assert len(rows) == 50 and {row["label"] for row in rows} == {"negative", "positive"}
    assert {"text": "movie 0 was fine .", "label": "negative"} in rows  # the first label of a repeat wins
    sources = json.loads((tmp_path / "sources.json").read_text())
    assert [s["lines_kept"] for s in sources["sources"]] == [200, 1, 50]
    assert sources["sources"][1]["registry"] == "debian" and sources["pretrain"]["train_lines"] == len(train)
    assert report.sentiment.train_lines + report.sentiment.test_lines == 50
