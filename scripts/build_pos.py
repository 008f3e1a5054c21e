"""Silver part-of-speech tags for corpus lines, from Debian's Lingua::EN::Tagger (a Penn-Treebank-trained HMM tagger).

Lines come from the pre-training splits (data/pretrain_{train,test}.txt), so held-out lines stay held out. The
tagger splits and tags each line; its words are aligned back to character spans of the original line, and its
tag names are mapped to the Penn Treebank's (DET -> DT, PRPS -> PRP$, PP -> ., PPC -> `,` ...). Lines whose words
cannot be aligned (the tagger rewrote them beyond its known quote and dash rewrites) are dropped and counted.
Needs `apt-get install -y liblingua-en-tagger-perl`. Run from the repository root: `python -m scripts.build_pos`.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from rpln_core.errors import RplnError
from scripts.build_corpus import debian_info

TAGGER_PACKAGE = "liblingua-en-tagger-perl"
# One line in, one line of "word/TAG word/TAG ..." out; -CSD: UTF-8 on stdin/stdout.
PERL = (
    "BEGIN{$|=1; $t = Lingua::EN::Tagger->new()} chomp; my $r = $t->get_readable($_); "
    "print((defined $r ? $r : ''), \"\\n\");"
)
PENN = {  # Lingua::EN::Tagger's names -> the Penn Treebank's
    "DET": "DT", "PRPS": "PRP$", "WPS": "WP$", "PP": ".", "PPC": ",", "PPD": "$", "PPL": "``", "PPR": "''",
    "PPS": ":", "LRB": "-LRB-", "RRB": "-RRB-",
}
QUOTES = {"``": ('"', "``", "“", "„"), "''": ('"', "''", "”")}
MAX_CHARS = 400  # about 100 tokens: one 128-token window holds a line whole


def tag_lines(lines: Sequence[str]) -> list[str]:
    """The tagger's "word/TAG" output for each line, in one perl process."""
    try:
        result = subprocess.run(
            ["perl", "-CSD", "-MLingua::EN::Tagger", "-ne", PERL],
            input="".join(line + "\n" for line in lines),
            capture_output=True, text=True, encoding="utf-8", check=True,
        )
    except (OSError, subprocess.CalledProcessError) as error:
        raise RplnError(f"Lingua::EN::Tagger did not run ({error}): `apt-get install -y {TAGGER_PACKAGE}`") from error
    out = result.stdout.split("\n")[: len(lines)]
    if len(out) != len(lines):
        raise RplnError(f"the tagger answered {len(out)} lines for {len(lines)}")
    return out


def parse_tagged(tagged: str) -> list[tuple[str, str]]:
    """[(word, Penn tag)] from "word/TAG ..." (a word may itself hold '/': the tag follows the last one)."""
    pairs = []
    for item in tagged.split():
        word, _, tag = item.rpartition("/")
        pairs.append((word, PENN.get(tag, tag)))
    return pairs


def align(text: str, words: Sequence[str]) -> list[tuple[int, int]] | None:
    """Character span of each tagger word in `text`, in order; None when one cannot be found where it should be."""
    spans, at = [], 0
    for word in words:
        while at < len(text) and text[at].isspace():
            at += 1
        if word in QUOTES:
            quote = next((q for q in QUOTES[word] if text.startswith(q, at)), None)
            if quote is None:
                return None
            end = at + len(quote)
        elif text.startswith(word, at):
            end = at + len(word)
        elif word == "-" and text.startswith("-", at):  # the tagger writes "--" as "-"
            end = at
            while end < len(text) and text[end] == "-":
                end += 1
        else:
            return None
        spans.append((at, end))
        at = end
    return spans if text[at:].strip() == "" else None


def label_lines(lines: Sequence[str]) -> tuple[list[dict], int]:
    """{"text", "words": [[start, end, tag]]} per alignable line; and how many lines were dropped."""
    examples, dropped = [], 0
    for text, tagged in zip(lines, tag_lines(lines), strict=True):
        pairs = parse_tagged(tagged)
        spans = align(text, [word for word, _ in pairs]) if pairs else None
        if spans is None:
            dropped += 1
            continue
        examples.append({"text": text, "words": [[s, e, tag] for (s, e), (_, tag) in zip(spans, pairs)]})
    return examples, dropped


def pick_lines(path: Path, count: int, seed: int) -> list[str]:
    if not path.is_file():
        raise RplnError(f"{path} not found; run `python -m scripts.build_corpus` first")
    lines = [line.rstrip("\n") for line in open(path, encoding="utf-8")]
    lines = [line for line in lines if line.strip() and len(line) <= MAX_CHARS]
    return random.Random(seed).sample(lines, min(count, len(lines)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--train-lines", type=int, default=20000)
    parser.add_argument("--test-lines", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        info = debian_info(TAGGER_PACKAGE, "lingua-en-tagger", "Penn Treebank part-of-speech tags (silver)")
        report = {"tagger": info.__dict__}
        for split, count in (("train", args.train_lines), ("test", args.test_lines)):
            lines = pick_lines(args.data / f"pretrain_{split}.txt", count, args.seed)
            examples, dropped = label_lines(lines)
            with open(args.data / f"pos_{split}.jsonl", "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)
            words = sum(len(e["words"]) for e in examples)
            report[split] = {"lines": len(examples), "dropped": dropped, "words": words}
    except RplnError as error:
        print(f"build_pos: {error.message}", file=sys.stderr)
        return 2
    (args.data / "pos_sources.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
