"""PreLN Explorer's engine: load a RoBERTa(-PreLayerNorm) checkpoint, run a task once, keep the trace.

Names are imported on first use (PEP 562), so `import rpln_core` costs nothing until a name that
needs torch and transformers is touched: the app starts serving without waiting for them.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "CaptureOptions": "capture",
    "LayerNormStats": "capture",
    "LogitLens": "capture",
    "Trace": "capture",
    "RplnError": "errors",
    "trace_frames": "frames",
    "result_frame": "frames",
    "HUB_PRESETS": "catalog",
    "bundled_models": "catalog",
    "ModelCard": "catalog",
    "model_card": "catalog",
    "LoadedModel": "load",
    "load_model": "load",
    "ClassificationResult": "tasks.classify",
    "classify": "tasks.classify",
    "FillMaskResult": "tasks.fill_mask",
    "fill_mask": "tasks.fill_mask",
    "QAResult": "tasks.qa",
    "answer": "tasks.qa",
    "TagResult": "tasks.tag",
    "tag": "tasks.tag",
    "ChoiceResult": "tasks.choice",
    "choose": "tasks.choice",
    "GenerationResult": "tasks.generate",
    "GenerationRun": "tasks.generate",
    "generate": "tasks.generate",
    "generate_steps": "tasks.generate",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'rpln_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value
