"""PreLN Explorer's engine: load a RoBERTa(-PreLayerNorm) checkpoint, run a task once, keep the trace."""

from .capture import CaptureOptions, LayerNormStats, LogitLens, Trace
from .errors import RplnError
from .load import HUB_PRESETS, LoadedModel, bundled_models, load_model
from .tasks.classify import ClassificationResult, classify
from .tasks.fill_mask import FillMaskResult, fill_mask
from .tasks.qa import QAResult, answer

__all__ = [
    "CaptureOptions",
    "ClassificationResult",
    "FillMaskResult",
    "HUB_PRESETS",
    "LayerNormStats",
    "LoadedModel",
    "LogitLens",
    "QAResult",
    "RplnError",
    "Trace",
    "answer",
    "bundled_models",
    "classify",
    "fill_mask",
    "load_model",
]
