"""Sequence classification with the labels and scores of pipeline("text-classification", top_k=None)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..capture import CaptureOptions, Trace
from ..load import LoadedModel
from ..tokens import encode
from .common import captured_pass, one_call_at_a_time, require_head


@dataclass
class LabelScore:
    label: str
    score: float


@dataclass
class ClassificationResult:
    """Every label with its score, best first, and the trace of the pass."""

    labels: list[LabelScore]
    function: str  # "softmax", "sigmoid" or "none": how logits became scores
    logits: list[float]  # in label-id order
    trace: Trace
    notices: list[str] = field(default_factory=list)

    def to_pipeline(self) -> list[dict]:
        return [asdict(label) for label in self.labels]


@one_call_at_a_time
def classify(
    loaded: LoadedModel, text: str, text_pair: str | None = None, *, options: CaptureOptions | None = None
) -> ClassificationResult:
    """Classify `text` (or the pair `text`, `text_pair`) with the checkpoint's trained head."""
    require_head(loaded, "classification")
    encoded = encode(loaded.tokenizer, text, text_pair, max_tokens=loaded.max_tokens)
    logits, trace = captured_pass(loaded, encoded, loaded.classifier, options=options)
    logits = logits[0].float()
    function = score_function(loaded.config)
    scores = {"softmax": logits.softmax(-1), "sigmoid": torch.sigmoid(logits), "none": logits}[function]
    id2label = loaded.config.id2label
    labels = [LabelScore(id2label[i], float(s)) for i, s in enumerate(scores.tolist())]
    labels.sort(key=lambda label: label.score, reverse=True)
    return ClassificationResult(labels, function, logits.tolist(), trace, list(trace.notices))


def score_function(config) -> str:
    """The pipeline's rule for turning logits into scores, from the config's problem type."""
    if config.problem_type == "regression":
        return "none"
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    return "softmax"
