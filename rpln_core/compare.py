"""One text through two models side by side, and the numbers the teaching tab compares.

Each model runs once with the capture on: a fill-mask pass when the text has a mask and the model an
LM head, else a plain encoder pass. The per-model figures below (residual norms, LayerNorm scales,
attention entropy, predictions) are plain Python values, ready for a chart, a CSV or the JSON API.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from . import analysis
from .architecture import LayerLayout, layer_layout
from .capture import Trace
from .errors import RplnError
from .load import LoadedModel
from .tasks.common import captured_pass
from .tasks.fill_mask import FillMaskResult, fill_mask, normalise_masks
from .tokens import check_text, encode

# The sides are named by position; the tab's defaults put the pre-LN model on the left.
SIDES = ("left", "right")
# A loaded model's layer layout never changes, so its probe pass runs once, not on every comparison.
_LAYOUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class ComparedModel:
    """What one model did with the text."""

    name: str
    architecture: str  # from the checkpoint's config; `layout` holds what its modules were seen to do
    layout: LayerLayout
    trace: Trace
    fill_mask: FillMaskResult | None  # None when the text has no mask or the model no LM head
    notices: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    text: str
    models: tuple[ComparedModel, ComparedModel]

    @property
    def notices(self) -> list[str]:
        return [f"{m.name}: {notice}" for m in self.models for notice in m.notices]


def compare(left: LoadedModel, right: LoadedModel, text: str, *, top_k: int = 5) -> Comparison:
    """Run `text` through both models; the two may be any RoBERTa checkpoints, pre-LN or post-LN."""
    check_text(text)
    if top_k < 1:
        raise RplnError("top_k must be at least 1.")
    return Comparison(text, (run_one(left, text, top_k), run_one(right, text, top_k)))


def run_one(loaded: LoadedModel, text: str, top_k: int) -> ComparedModel:
    """A fill-mask pass if the text has a mask and the model can fill it, else a plain pass."""
    has_mask = loaded.tokenizer.mask_token in normalise_masks(text, loaded.tokenizer.mask_token)[0]
    notices = []
    result = None
    if has_mask and loaded.has_trained_head("mlm"):
        result = fill_mask(loaded, text, top_k=top_k)
        trace = result.trace
    else:
        if has_mask:
            notices.append("has no trained fill-mask head, so it shows no predictions.")
        encoded = encode(loaded.tokenizer, text, max_tokens=loaded.max_tokens)
        _, trace = captured_pass(loaded, encoded, lambda hidden: hidden)
    notices += list(trace.notices)
    return ComparedModel(loaded.name, loaded.architecture, layout_of(loaded), trace, result, notices)


def layout_of(loaded: LoadedModel) -> LayerLayout:
    """`layer_layout(loaded)`, observed once per loaded model."""
    if loaded.model not in _LAYOUTS:
        _LAYOUTS[loaded.model] = layer_layout(loaded)
    return _LAYOUTS[loaded.model]


# --- the numbers behind each panel ------------------------------------------------------------------


def residual_norms(model: ComparedModel) -> dict:
    """Mean residual-stream norm at each point (embed, then each layer's input, then the last output)."""
    growth = analysis.residual_growth(model.trace)
    return {"norms": growth.resid_norm.tolist(), "growth_factor": growth.growth_factor}


def layernorm_rows(model: ComparedModel, threshold: float = 3.0) -> list[dict]:
    """Per LayerNorm, in the order they ran: where it sits, its mean 1/σ scale and its γ/β outliers."""
    outliers = {entry.name: entry for entry in analysis.layernorm_outliers(model.trace, threshold)}
    return [
        {
            "model": model.name,
            "layernorm": stats.name,
            "module": stats.module,
            "placement": stats.placement,
            "mean_input_std": float(stats.std.float().mean()),
            "mean_scale": float(stats.scale.float().mean()),
            "max_abs_input": float(stats.max_abs.float().max()),
            "gamma_outlier_dims": outliers[stats.name].gamma_dims,
            "beta_outlier_dims": outliers[stats.name].beta_dims,
        }
        for stats in model.trace.layernorms
    ]


def entropy(model: ComparedModel) -> list[list[float]]:
    """[layers][heads] mean attention entropy in nats."""
    return analysis.attention_entropy(model.trace).tolist()


def predictions(model: ComparedModel) -> list[list[dict]]:
    """Per mask, the top-k tokens and scores; empty when the model made no fill-mask predictions."""
    if model.fill_mask is None:
        return []
    return [[{"token": p.token_str, "score": p.score} for p in row] for row in model.fill_mask.predictions]


def model_summary(model: ComparedModel) -> dict:
    """Everything the tab shows for one model, as JSON-ready values."""
    return {
        "model": model.name,
        "architecture": model.architecture,
        "layer_steps": [step.label for step in model.layout.steps],
        "final_layernorm": model.layout.final_layernorm,
        "tokens": model.trace.tokens.strings,
        "residual": residual_norms(model),
        "layernorms": layernorm_rows(model),
        "attention_entropy": entropy(model),
        "fill_mask": predictions(model),
        "notices": model.notices,
    }


def comparison_summary(comparison: Comparison) -> dict:
    """The JSON the `compare` endpoint returns and the tab offers for download."""
    return {"text": comparison.text, **{side: model_summary(m) for side, m in zip(SIDES, comparison.models)}}


def comparison_tables(comparison: Comparison) -> dict[str, list[dict]]:
    """Flat rows per panel for CSV export: residual norms, LayerNorms, entropy and predictions."""
    tables: dict[str, list[dict]] = {"residual_norms": [], "layernorms": [], "attention_entropy": [], "fill_mask": []}
    for model in comparison.models:
        for point, norm in enumerate(residual_norms(model)["norms"]):
            tables["residual_norms"].append({"model": model.name, "stream_point": point, "mean_norm": norm})
        for row in layernorm_rows(model):
            dims = {key: " ".join(map(str, row[key])) for key in ("gamma_outlier_dims", "beta_outlier_dims")}
            tables["layernorms"].append({**row, **dims})
        for layer, heads in enumerate(entropy(model)):
            for head, value in enumerate(heads):
                tables["attention_entropy"].append({"model": model.name, "layer": layer, "head": head, "nats": value})
        for mask, row in enumerate(predictions(model)):
            for rank, p in enumerate(row):
                tables["fill_mask"].append({"model": model.name, "mask": mask + 1, "rank": rank + 1, **p})
    return tables
