"""Train the byte-level BPE tokenizer on the pre-training text and save it in RoBERTa's format.

The directory holds vocab.json + merges.txt (as roberta-base ships them) and tokenizer.json +
tokenizer_config.json, so `AutoTokenizer.from_pretrained(dir)` gives a `RobertaTokenizer`.
Run from the repository root: `python -m scripts.train_tokenizer --data data/pretrain_train.txt --out ...`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, RobertaTokenizer

from rpln_core.errors import RplnError
from rpln_core.pretraining import limit_threads
from rpln_core.synthetic import SPECIAL_TOKENS, roberta_tokenizer_from_bpe

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class TokenizerReport:
    """What was trained and where it was saved."""

    directory: str
    vocab_size: int
    requested_vocab_size: int
    special_ids: dict[str, int]


def train_bpe(files: Sequence[Path], vocab_size: int, min_frequency: int = 2) -> ByteLevelBPETokenizer:
    """Byte-level BPE with RoBERTa's special tokens first, so they get ids 0..4."""
    bpe = ByteLevelBPETokenizer()
    bpe.train(
        [str(path) for path in files],
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    return bpe


def save_tokenizer(bpe: ByteLevelBPETokenizer, directory: Path, model_max_length: int) -> RobertaTokenizer:
    """Write both RoBERTa's vocab.json/merges.txt and the fast tokenizer files."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = roberta_tokenizer_from_bpe(bpe, model_max_length=model_max_length)
    tokenizer.save_pretrained(directory)
    bpe.save_model(str(directory))  # v5's save_pretrained writes only tokenizer.json
    return tokenizer


def load_checked(directory: Path, expected_size: int) -> RobertaTokenizer:
    """Reload through AutoTokenizer and fail loudly on the silent 5-token-vocabulary pitfall."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if not isinstance(tokenizer, RobertaTokenizer):
        raise RplnError(f"{directory} loads as {type(tokenizer).__name__}, expected RobertaTokenizer")
    if len(tokenizer) != expected_size:
        raise RplnError(f"{directory} reloads with {len(tokenizer)} tokens, trained {expected_size}")
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    if ids[:4] != [0, 1, 2, 3]:
        raise RplnError(f"special tokens {SPECIAL_TOKENS[:4]} have ids {ids[:4]}, expected 0..3")
    return tokenizer


def copy_tokenizer_files(source: Path, target: Path) -> None:
    """Copy the saved tokenizer files into a model directory, byte for byte."""
    target.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def train_tokenizer(
    files: Sequence[Path], directory: Path, vocab_size: int = 16000, model_max_length: int = 128
) -> TokenizerReport:
    """Train, save and verify; the trained size can fall short of `vocab_size` on a small corpus."""
    bpe = train_bpe(files, vocab_size)
    save_tokenizer(bpe, directory, model_max_length)
    tokenizer = load_checked(directory, bpe.get_vocab_size())
    special_ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS), strict=True))
    return TokenizerReport(str(directory), len(tokenizer), vocab_size, special_ids)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", default=[Path("data/pretrain_train.txt")])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vocab-size", type=int, default=16000)
    parser.add_argument("--model-max-length", type=int, default=128, help="the model's token limit")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    missing = [str(path) for path in args.data if not path.is_file()]
    if missing:
        print(f"train_tokenizer: missing {missing}; run `python -m scripts.build_corpus` first", file=sys.stderr)
        return 2
    try:
        report = train_tokenizer(args.data, args.out, args.vocab_size, args.model_max_length)
    except RplnError as error:
        print(f"train_tokenizer: {error.message}", file=sys.stderr)
        return 2
    print(asdict(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
