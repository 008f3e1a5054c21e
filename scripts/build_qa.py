"""Build extractive QA data with exact answer offsets from WordNet definitions (Debian `wordnet-base`).

Each example asks for the meaning of a word ("What is a dog?", "What does it mean to run?", "Define
frugal.") over a context of 3-6 WordNet entries written as "{words}: {definition}.", one of which is
the word's own entry. The answer is the first clause of that entry's definition (at most 12 words, so it
fits the QA decoder's `max_answer_len` of 15 tokens). Train and test are split BY LEMMA: no word asked
about in a test question is the target of a training question, under any of its senses. There are no
unanswerable questions: the app decodes with `handle_impossible_answer=False`, so we never train for them.
Run from the repository root: `python -m scripts.build_qa --out data --tokenizer runs/tokenizer`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from rpln_core.errors import RplnError
from scripts.build_corpus import WORDNET_DIR, WORDNET_FILES, debian_info, wordnet_gloss_line, write_lines

MAX_ANSWER_WORDS = 12  # 12 words stay within the decoder's max_answer_len of 15 tokens (checked with --tokenizer)
MIN_ANSWER_WORDS = 2  # one-word definitions are synonyms, not meanings
MAX_DEFINITION_WORDS = 25  # longer entries would leave room for too few of them in 128 tokens
MAX_CONTEXT_WORDS = 55  # WordNet runs ~2 tokens a word: about 110 tokens, so question + context fit in 128
MAX_SHOWN_LEMMAS = 3  # "dog, domestic dog, Canis familiaris": enough to read like a dictionary
ENTRIES = (3, 6)  # entries per context, target included
MAX_ANSWER_TOKENS = 15  # the decoder's default max_answer_len
MAX_SEQ_TOKENS = 128  # the bundled models' limit, special tokens included
POS_OF_FILE = {"data.noun": "noun", "data.verb": "verb", "data.adj": "adj", "data.adv": "adv"}

# A question names the word in the way its part of speech asks for; proper nouns take no article.
TEMPLATES = {
    "noun": (
        "What is {article} {lemma}?",
        "What does {lemma} mean?",
        "Define {lemma}.",
        "What is the meaning of {lemma}?",
    ),
    "proper": ("What is {lemma}?", "What does {lemma} refer to?", "Define {lemma}."),
    "verb": ("What does it mean to {lemma}?", "What does {lemma} mean?", "Define {lemma}."),
    "adj": ("What does {lemma} mean?", "Define {lemma}.", "What is meant by {lemma}?"),
    "adv": ("What does {lemma} mean?", "Define {lemma}.", "What is meant by {lemma}?"),
}


@dataclass(frozen=True)
class Entry:
    """One WordNet synset as the QA data uses it."""

    lemmas: tuple[str, ...]  # as WordNet spells them, underscores turned into spaces
    definition: str  # the gloss without its quoted examples
    pos: str  # noun, verb, adj or adv

    @property
    def answer(self) -> str:
        """The first clause of the definition: what a question about this entry is answered with."""
        return self.definition.split(";")[0].strip()

    @property
    def text(self) -> str:
        """The entry as it reads in a context."""
        names = ", ".join(self.lemmas[:MAX_SHOWN_LEMMAS])
        return f"{names}: {self.definition}" + ("" if self.definition.endswith(".") else ".")

    @property
    def keys(self) -> set[str]:
        return {lemma_key(lemma) for lemma in self.lemmas}


@dataclass
class QAExample:
    """One line of qa_{train,test}.jsonl; context[answer_start:answer_start+len(answer)] == answer."""

    question: str
    context: str
    answer: str
    answer_start: int
    lemma: str  # the word asked about (its split decides the example's split)
    pos: str
    entries: int  # WordNet entries in the context, the target included


# ---------------------------------------------------------------- WordNet


def lemma_key(lemma: str) -> str:
    """Lemmas are the same word whatever their case ("Bank", "bank")."""
    return lemma.casefold()


def definition_of(gloss: str) -> str:
    """The gloss up to its first quoted example, without trailing separators."""
    return re.split(r';\s*"', gloss, maxsplit=1)[0].strip().rstrip(";").strip()


def entry_from_line(line: str, pos: str) -> Entry | None:
    """Parse a raw WordNet data-file record (None for the licence header and example-only glosses)."""
    gloss_line = wordnet_gloss_line(line)
    if gloss_line is None:
        return None
    words, gloss = gloss_line.split(": ", 1)  # WordNet lemmas never contain ":" or ","
    definition = definition_of(gloss)
    if not definition or definition.startswith('"'):
        return None
    return Entry(tuple(words.split(", ")), definition, pos)


def read_entries(root: Path = WORDNET_DIR) -> list[Entry]:
    """Every synset of WordNet's four data files, in file order."""
    entries = []
    for name in WORDNET_FILES:
        path = root / name
        if not path.is_file():
            raise RplnError(f"{path} not found: run `apt-get install -y wordnet-base`")
        with open(path, encoding="utf-8") as handle:
            entries.extend(entry for line in handle if (entry := entry_from_line(line, POS_OF_FILE[name])))
    return entries


def word_count(text: str) -> int:
    return len(text.split())


def can_be_target(entry: Entry) -> bool:
    """A short definition whose first clause is a real phrase."""
    return can_be_distractor(entry) and MIN_ANSWER_WORDS <= word_count(entry.answer) <= MAX_ANSWER_WORDS


def can_be_distractor(entry: Entry) -> bool:
    return word_count(entry.definition) <= MAX_DEFINITION_WORDS


# ---------------------------------------------------------------- split by lemma


def is_test_lemma(lemma: str, seed: int, test_fraction: float) -> bool:
    """Deterministic by (seed, lemma): the same word lands in the same split in every run."""
    digest = hashlib.sha256(f"{seed}:{lemma_key(lemma)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def split_targets(
    entries: Sequence[Entry], seed: int, test_fraction: float
) -> tuple[list[tuple[Entry, list[str]]], list[tuple[Entry, list[str]]]]:
    """(entry, lemmas it may be asked by) for train and test.

    A test target is asked by one of its test lemmas; a train target may contain no test lemma at all,
    so a word asked about at test time is never a training target under any sense or synonym.
    """
    train, test = [], []
    for entry in entries:
        if not can_be_target(entry):
            continue
        held_out = [lemma for lemma in entry.lemmas if is_test_lemma(lemma, seed, test_fraction)]
        if held_out:
            test.append((entry, held_out))
        else:
            train.append((entry, list(entry.lemmas)))
    return train, test


# ---------------------------------------------------------------- examples


def question_for(lemma: str, pos: str, rng: random.Random) -> str:
    """A question asking what `lemma` means, phrased for its part of speech."""
    kind = "proper" if pos == "noun" and lemma[:1].isupper() else pos
    template = rng.choice(TEMPLATES[kind])
    article = "an" if lemma[:1].lower() in "aeiou" else "a"
    return template.format(lemma=lemma, article=article)


def pick_distractors(target: Entry, pool: Sequence[Entry], count: int, rng: random.Random) -> list[Entry]:
    """Up to `count` other entries of the same part of speech sharing no lemma with the target (so the
    question has one answer), within the context's word budget."""
    chosen: list[Entry] = []
    keys = set(target.keys)
    words = word_count(target.text)
    for _ in range(count * 10):
        if len(chosen) == count:
            break
        candidate = rng.choice(pool)
        if candidate.keys & keys or words + word_count(candidate.text) > MAX_CONTEXT_WORDS:
            continue
        chosen.append(candidate)
        keys |= candidate.keys
        words += word_count(candidate.text)
    return chosen


def make_example(target: Entry, lemmas: Sequence[str], pool: Sequence[Entry], rng: random.Random) -> QAExample | None:
    """A question about `target` over a shuffled context; None when too few distractors fit the budget."""
    distractors = pick_distractors(target, pool, rng.randint(*ENTRIES) - 1, rng)
    if len(distractors) < ENTRIES[0] - 1:
        return None
    entries = list(distractors)
    entries.insert(rng.randint(0, len(entries)), target)
    offset, texts = 0, []
    for entry in entries:
        if entry is target:
            answer_start = offset + entry.text.index(": ") + 2  # the definition starts right after the colon
        texts.append(entry.text)
        offset += len(entry.text) + 1
    context = " ".join(texts)
    lemma = rng.choice(list(lemmas))
    question = question_for(lemma, target.pos, rng)
    example = QAExample(question, context, target.answer, answer_start, lemma, target.pos, len(entries))
    assert context[answer_start : answer_start + len(example.answer)] == example.answer, example
    return example


def make_examples(
    targets: Sequence[tuple[Entry, list[str]]], pools: dict[str, list[Entry]], size: int, rng: random.Random
) -> list[QAExample]:
    """One question for each of up to `size` targets, drawn in a seeded order."""
    order = list(range(len(targets)))
    rng.shuffle(order)
    examples = []
    for index in order:
        if len(examples) == size:
            break
        target, lemmas = targets[index]
        example = make_example(target, lemmas, pools[target.pos], rng)
        if example is not None:
            examples.append(example)
    return examples


def first_entry_answer(context: str) -> str:
    """The trivial baseline: the first clause of the context's first entry, whatever was asked.
    Read back from the text, so a definition holding ". " mid-sentence is cut there (rare)."""
    definition = context.split(": ", 1)[-1]
    return re.split(r";|\.(?:\s|$)", definition, maxsplit=1)[0].strip()


# ---------------------------------------------------------------- token checks and statistics


class TokenCheck:
    """With the model's tokenizer: keep examples whose answer fits the decoder and whose input fits the model."""

    def __init__(self, tokenizer_dir: Path):
        from transformers import AutoTokenizer  # only this optional check needs it

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def answer_tokens(self, example: QAExample) -> int:
        # In the context the answer follows ": ", so it is tokenized as a space-prefixed word sequence.
        return len(self.tokenizer(" " + example.answer, add_special_tokens=False)["input_ids"])

    def input_tokens(self, example: QAExample) -> int:
        return len(self.tokenizer(example.question, example.context, verbose=False)["input_ids"])

    def keep(self, example: QAExample) -> bool:
        return self.answer_tokens(example) <= MAX_ANSWER_TOKENS and self.input_tokens(example) <= MAX_SEQ_TOKENS


def histogram(values: Iterable[int]) -> dict[str, int]:
    """{value: count}, keys sorted numerically (as strings, for JSON)."""
    counts = Counter(values)
    return {str(key): counts[key] for key in sorted(counts)}


def describe(examples: Sequence[QAExample], check: TokenCheck | None) -> dict:
    """Counts and length distributions of one split."""
    stats = {
        "examples": len(examples),
        "lemmas": len({lemma_key(e.lemma) for e in examples}),
        "pos": dict(Counter(e.pos for e in examples)),
        "answer_words": histogram(word_count(e.answer) for e in examples),
        "context_entries": histogram(e.entries for e in examples),
        "context_words_max": max((word_count(e.context) for e in examples), default=0),
    }
    if check is not None and examples:
        answer_tokens = [check.answer_tokens(e) for e in examples]
        input_tokens = [check.input_tokens(e) for e in examples]
        stats["answer_tokens_mean"] = round(sum(answer_tokens) / len(examples), 2)
        stats["answer_tokens_max"] = max(answer_tokens)
        stats["input_tokens_mean"] = round(sum(input_tokens) / len(examples), 2)
        stats["input_tokens_max"] = max(input_tokens)
    return stats


# ---------------------------------------------------------------- building


@dataclass
class QASplits:
    """The two splits, and how many generated examples the token check dropped from each."""

    train: list[QAExample]
    test: list[QAExample]
    dropped: dict[str, int]


def build_qa(
    entries: Sequence[Entry],
    *,
    train_size: int,
    test_size: int,
    seed: int = 0,
    test_fraction: float = 0.05,
    check: TokenCheck | None = None,
) -> QASplits:
    """Train and test examples, split by lemma, deterministic by seed."""
    pools: dict[str, list[Entry]] = {}
    for entry in entries:
        if can_be_distractor(entry):
            pools.setdefault(entry.pos, []).append(entry)
    train_targets, test_targets = split_targets(entries, seed, test_fraction)
    splits, dropped = {}, {}
    for name, targets, size, salt in (("train", train_targets, train_size, 1), ("test", test_targets, test_size, 2)):
        rng = random.Random(seed * 1_000 + salt)  # each split has its own stream: sizes don't shift the other
        # over-generate so the token check can drop some and still reach `size`
        examples = make_examples(targets, pools, size * 2 if check else size, rng)
        kept, refused = [], 0
        for example in examples:
            if len(kept) == size:
                break
            if check is None or check.keep(example):
                kept.append(example)
            else:
                refused += 1
        splits[name], dropped[name] = kept, refused
    return QASplits(splits["train"], splits["test"], dropped)


def write_examples(path: Path, examples: Iterable[QAExample]) -> None:
    write_lines(path, (json.dumps(asdict(example), ensure_ascii=False) for example in examples))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--wordnet", type=Path, default=WORDNET_DIR, help="folder of WordNet's data.* files")
    parser.add_argument("--tokenizer", type=Path, help="drop examples too long in tokens for this tokenizer")
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--test-fraction", type=float, default=0.05, help="share of lemmas held out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        info = debian_info("wordnet-base", "wordnet", "WordNet 3.0 synset definitions")
        entries = read_entries(args.wordnet)
        check = TokenCheck(args.tokenizer) if args.tokenizer else None
    except (RplnError, OSError) as error:
        print(f"build_qa: {getattr(error, 'message', error)}", file=sys.stderr)
        return 2
    splits = build_qa(
        entries,
        train_size=args.train_size,
        test_size=args.test_size,
        seed=args.seed,
        test_fraction=args.test_fraction,
        check=check,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_examples(args.out / "qa_train.jsonl", splits.train)
    write_examples(args.out / "qa_test.jsonl", splits.test)
    report = {
        "source": asdict(info),
        "seed": args.seed,
        "test_fraction_of_lemmas": args.test_fraction,
        "tokenizer": str(args.tokenizer) if args.tokenizer else None,
        "dropped_by_token_check": splits.dropped,
        "train": describe(splits.train, check),
        "test": describe(splits.test, check),
    }
    (args.out / "qa_stats.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
