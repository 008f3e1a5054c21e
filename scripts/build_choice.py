"""Multiple-choice questions "which definition fits this word?" from WordNet 3.0 glosses, split by lemma.

Each question is a lemma and four definitions: the definition of one of its synsets (chosen by seed) and three
distractors, definitions of other synsets of the same part of speech that do not contain the lemma. The split is
by lemma (a hash of it, as build_corpus splits lines), and distractors come from the same split, so no held-out
question shares a lemma with a training one. Needs `apt-get install -y wordnet-base`.
Run from the repository root: `python -m scripts.build_choice`.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rpln_core.errors import RplnError
from scripts.build_corpus import WORDNET_DIR, WORDNET_FILES, clean_line, debian_info, is_held_out

CHOICES = 4
POS_OF = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


@dataclass(frozen=True)
class Synset:
    pos: str
    lemmas: tuple[str, ...]
    definition: str


def definition_of(gloss: str) -> str:
    """The definition part of a WordNet gloss: what precedes its quoted examples."""
    return clean_line(gloss.split('"', 1)[0]).rstrip(" ;")


def parse_synset(line: str) -> Synset | None:
    """One data-file record as a Synset, or None for licence header lines."""
    if line.startswith(" ") or "|" not in line:
        return None
    fields, gloss = line.split("|", 1)
    parts = fields.split()
    count = int(parts[3], 16)
    lemmas = tuple(re.sub(r"\([a-z]+\)$", "", parts[4 + 2 * i]).replace("_", " ").lower() for i in range(count))
    definition = definition_of(gloss)
    return Synset(POS_OF[parts[2]], lemmas, definition) if definition else None


def read_synsets(root: Path = WORDNET_DIR) -> list[Synset]:
    debian_info("wordnet-base", "wordnet", "WordNet 3.0 synset definitions")  # a clear error when absent
    synsets = []
    for name in WORDNET_FILES:
        with open(root / name, encoding="utf-8") as handle:
            synsets += [s for s in map(parse_synset, handle) if s is not None]
    return synsets


def questions(synsets: Sequence[Synset], held_out: bool, test_fraction: float, limit: int, seed: int) -> list[dict]:
    """Up to `limit` questions over the lemmas of one side of the split."""
    rng = random.Random(seed)
    senses = collections.defaultdict(list)  # lemma -> its synsets
    for synset in synsets:
        for lemma in synset.lemmas:
            if is_held_out(lemma, test_fraction) == held_out:
                senses[lemma].append(synset)
    by_pos = collections.defaultdict(list)  # distractor pool: this side's synsets only
    for synset in {s for group in senses.values() for s in group}:
        by_pos[synset.pos].append(synset)
    for pool in by_pos.values():
        pool.sort(key=lambda s: (s.definition, s.lemmas))  # set order is not stable across runs
    lemmas = sorted(senses)
    rng.shuffle(lemmas)
    out = []
    for lemma in lemmas[:limit]:
        answer = rng.choice(senses[lemma])
        distractors: list[str] = []
        while len(distractors) < CHOICES - 1:
            other = rng.choice(by_pos[answer.pos])
            if lemma not in other.lemmas and other.definition not in distractors + [answer.definition]:
                distractors.append(other.definition)
        choices = distractors + [answer.definition]
        rng.shuffle(choices)
        out.append({"word": lemma, "pos": answer.pos, "choices": choices, "label": choices.index(answer.definition)})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--test-fraction", type=float, default=0.05, help="share of lemmas held out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        synsets = read_synsets()
    except RplnError as error:
        print(f"build_choice: {error.message}", file=sys.stderr)
        return 2
    report = {}
    for split, held_out, limit in (("train", False, args.train), ("test", True, args.test)):
        items = questions(synsets, held_out, args.test_fraction, limit, args.seed)
        with open(args.out / f"choice_{split}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        report[split] = len(items)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
