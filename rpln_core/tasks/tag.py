"""Token classification (NER, part-of-speech tags) with the fields and scores of pipeline("token-classification").

Every aggregation strategy of the pipeline: "none" (one row per token), "simple" (adjacent tokens with the same tag
grouped), "first", "average" and "max" (tokens of one word forced to one label first, then grouped). Each step
follows transformers 5's TokenClassificationPipeline, quirks included, so that rows, words and offsets are the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..capture import CaptureOptions, Trace
from ..errors import RplnError
from ..load import LoadedModel
from ..tokens import encode
from .common import captured_pass, one_call_at_a_time, require_head

AGGREGATION_STRATEGIES = ("none", "simple", "first", "average", "max")
WORD_STRATEGIES = ("first", "average", "max")  # the ones that first give all tokens of a word one label
DEFAULT_IGNORE_LABELS = ("O",)  # the pipeline's default: "outside any entity" rows are dropped


@dataclass
class Entity:
    """One row of the result: a token (strategy "none") or a run of adjacent tokens or words with one tag."""

    label: str  # the pipeline's `entity` (strategy "none") or `entity_group` (the tag without its B-/I- prefix)
    score: float  # the label's probability (grouped: the mean over the group)
    # As the pipeline builds it. "none": the token as the vocabulary spells it ("Ġcat"); grouped: decoded (" cat"),
    # but word strategies decode twice, which garbles non-ASCII ("Z�rich"): text[start:end] is the exact text.
    word: str
    start: int  # character offsets into the text: text[start:end]
    end: int
    index: int | None = None  # "none" only: the token's position in trace.tokens


@dataclass
class TagResult:
    """The tagged entities in text order, every token's label scores, and the trace of the pass."""

    entities: list[Entity]
    aggregation_strategy: str
    labels: list[str]  # config.id2label in id order: the columns of token_scores
    token_scores: torch.Tensor  # [tokens, labels] softmax per token, rows aligned with trace.tokens (specials too)
    text: str
    trace: Trace
    notices: list[str] = field(default_factory=list)

    @property
    def token_labels(self) -> list[str]:
        """Each token's most probable label, aligned with trace.tokens: what a per-token chart colours."""
        return [self.labels[i] for i in self.token_scores.argmax(-1).tolist()]

    def to_pipeline(self) -> list[dict]:
        """The rows as pipeline("token-classification") returns them, with its keys in its order."""
        if self.aggregation_strategy == "none":
            return [
                {"entity": e.label, "score": e.score, "index": e.index, "word": e.word, "start": e.start, "end": e.end}
                for e in self.entities
            ]
        return [
            {"entity_group": e.label, "score": e.score, "word": e.word, "start": e.start, "end": e.end}
            for e in self.entities
        ]


@dataclass
class _Piece:
    """A token the pipeline keeps (the tokenizer's own special tokens are left out), before aggregation."""

    word: str
    scores: np.ndarray  # [labels] float32
    start: int
    end: int
    index: int
    is_subword: bool


@one_call_at_a_time
def tag(
    loaded: LoadedModel,
    text: str,
    *,
    aggregation_strategy: str = "none",
    ignore_labels: Sequence[str] | None = None,
    options: CaptureOptions | None = None,
) -> TagResult:
    """Label every token of `text` and aggregate as pipeline("token-classification", aggregation_strategy=…) does.

    `ignore_labels` (default ["O"], as in the pipeline) drops rows with those labels (grouped rows: their tag).
    A text longer than the model reads is cut to its first tokens, with a notice."""
    require_head(loaded, "token-classification")
    strategy = check_strategy(aggregation_strategy)
    ignored = check_ignore_labels(ignore_labels)
    encoded = encode(loaded.tokenizer, text, max_tokens=loaded.max_tokens)
    logits, trace = captured_pass(loaded, encoded, lambda hidden: loaded.classifier(hidden)[0], options=options)
    scores = logits.float().softmax(dim=-1).cpu()  # [tokens, labels]
    id2label = loaded.config.id2label
    labels = [id2label[i] for i in range(scores.shape[-1])]
    pieces = gather_pieces(loaded.tokenizer, text, encoded.inputs["input_ids"][0].tolist(), trace, scores.numpy())
    entities = aggregate(loaded.tokenizer, labels, pieces, strategy)
    kept = [entity for entity in entities if entity.label not in ignored]
    return TagResult(kept, strategy, labels, scores, text, trace, list(trace.notices))


def check_strategy(value) -> str:
    """The aggregation strategy, read case-insensitively as the pipeline reads it, or a refusal naming the field."""
    strategy = value.lower() if isinstance(value, str) else None
    if strategy not in AGGREGATION_STRATEGIES:
        raise RplnError(f"aggregation_strategy must be one of {', '.join(AGGREGATION_STRATEGIES)}; got {value!r}.")
    return strategy


def check_ignore_labels(value) -> frozenset[str]:
    """The labels to drop: None means the pipeline's default ["O"]; otherwise a list of label names."""
    if value is None:
        return frozenset(DEFAULT_IGNORE_LABELS)
    if isinstance(value, str) or not all(isinstance(label, str) for label in value):
        # The pipeline would test each label as a substring of a bare string ("O" drops "O" but also "", …):
        # refuse it rather than guess which was meant.
        raise RplnError(f"ignore_labels must be a list of label names, e.g. ['O']; got {value!r}.")
    return frozenset(value)


def gather_pieces(tokenizer, text: str, ids: list[int], trace: Trace, scores: np.ndarray) -> list[_Piece]:
    """The tokens the pipeline reads, with its rule for whether each continues the word before it.

    Skipped: only the tokens the tokenizer added (<s>, </s>); a <mask> typed in the text is a token like any other,
    as the tokenizer's special_tokens_mask has it."""
    # A tokenizer that marks word-continuing pieces (WordPiece's "##") tells subwords exactly; byte-level BPE does
    # not, so the pipeline falls back to "no space before it", which is what RoBERTa's tokenizers get.
    model = getattr(getattr(tokenizer, "_tokenizer", None), "model", None)
    marks_subwords = bool(getattr(model, "continuing_subword_prefix", None))
    pieces = []
    for index, (token_id, (start, end), segment) in enumerate(zip(ids, trace.tokens.offsets, trace.tokens.segments)):
        if segment is None:
            continue
        word = tokenizer.convert_ids_to_tokens(token_id)
        word_ref = text[start:end]
        if marks_subwords:
            is_subword = len(word) != len(word_ref)
        else:
            is_subword = start > 0 and " " not in text[start - 1 : start + 1]
        if token_id == tokenizer.unk_token_id:
            word, is_subword = word_ref, False
        pieces.append(_Piece(word, scores[index], start, end, index, is_subword))
    return pieces


def aggregate(tokenizer, labels: list[str], pieces: list[_Piece], strategy: str) -> list[Entity]:
    """The pipeline's rows for `strategy`, before labels are ignored."""
    if strategy in WORD_STRATEGIES:
        entities = [word_entity(tokenizer, labels, word, strategy) for word in words_of(pieces)]
    else:
        entities = [token_entity(labels, piece) for piece in pieces]
    if strategy == "none":
        return entities
    return [group_entity(tokenizer, group) for group in tag_runs(entities)]


def token_entity(labels: list[str], piece: _Piece) -> Entity:
    best = int(piece.scores.argmax())
    return Entity(labels[best], float(piece.scores[best]), piece.word, piece.start, piece.end, piece.index)


def words_of(pieces: list[_Piece]) -> list[list[_Piece]]:
    """Pieces grouped into words: a piece that continues a word joins the one before it."""
    words: list[list[_Piece]] = []
    for piece in pieces:
        if words and piece.is_subword:
            words[-1].append(piece)
        else:
            words.append([piece])
    return words


def word_entity(tokenizer, labels: list[str], word: list[_Piece], strategy: str) -> Entity:
    """One label for a whole word: its first token's ("first"), its most confident token's ("max"), or the best
    label of its tokens' mean scores ("average")."""
    if strategy == "first":
        scores = word[0].scores
    elif strategy == "max":
        scores = max(word, key=lambda piece: piece.scores.max()).scores
    else:
        scores = np.nanmean(np.stack([piece.scores for piece in word]), axis=0)
    best = int(scores.argmax())
    text = tokenizer.convert_tokens_to_string([piece.word for piece in word])
    return Entity(labels[best], float(scores[best]), text, word[0].start, word[-1].end)


def split_tag(label: str) -> tuple[str, str]:
    """("B" or "I", the tag): "B-PER" -> ("B", "PER"); a label without a B-/I- prefix continues like an I-."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def tag_runs(entities: list[Entity]) -> list[list[Entity]]:
    """Adjacent rows with the same tag, a B- starting a new run (two B- never merge)."""
    runs: list[list[Entity]] = []
    for entity in entities:
        bi, tag_name = split_tag(entity.label)
        if runs and bi != "B" and tag_name == split_tag(runs[-1][-1].label)[1]:
            runs[-1].append(entity)
        else:
            runs.append([entity])
    return runs


def group_entity(tokenizer, run: list[Entity]) -> Entity:
    """One row for a run: the first row's tag without its prefix, the mean score, the decoded words."""
    return Entity(
        label=run[0].label.split("-", 1)[-1],
        score=float(np.nanmean([entity.score for entity in run])),
        word=tokenizer.convert_tokens_to_string([entity.word for entity in run]),
        start=run[0].start,
        end=run[-1].end,
    )
