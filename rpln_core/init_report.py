"""The "Gradients at initialisation" experiment in one call: both LayerNorm placements, one depth and a depth sweep.

`run_init_experiment` validates what the user chose, measures fresh pre-LN and post-LN models with
`init_experiments` (per-layer gradients, residual norms with Lemma 2's bounds, the last layer's
gradient against depth) and returns an `InitExperiment` that the figures, the CSV and the JSON read.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Sequence

from .checks import MAX_SEED, whole_number
from .errors import RplnError
from .init_experiments import (
    DEFAULT_DEPTHS,
    GradientsAtInit,
    ResidualNormsAtInit,
    gradients_at_init,
    residual_norms_at_init,
)
from .init_std import matched_init_std
from .synthetic import Architecture

ARCHITECTURES: tuple[Architecture, ...] = ("pre-ln", "post-ln")
WIDTHS = (64, 128, 256)  # 256 keeps a 24-layer model under a second a pass on two CPU cores
HEADS = 4  # every width offered divides by it, so each head is 16, 32 or 64 wide
MAX_DEPTH = 24  # the deepest point of Xiong et al.'s sweep we reproduce; deeper costs seconds per click
MAX_INIT_STD = 0.5  # far past any useful init already: larger stds only saturate the softmax

# CSV columns in order. A "per_layer" row is stream point `layer` of the chosen depth's model (0 is the
# embedding output, which has no FFN gradient); a "depth_sweep" row is the last layer of a model
# `model_depth` layers deep. `layer` counts from 1 like Xiong et al.'s x_l; `grad_parameter` gives
# transformers' own, 0-based, name of the weight whose gradient is `grad_norm`.
ROW_COLUMNS = (
    "section",
    "architecture",
    "model_depth",
    "layer",
    "grad_parameter",
    "grad_norm",  # Frobenius norm of d(MLM loss) / d grad_parameter
    "mean_resid_norm",  # mean over tokens of ||x_layer||, the residual stream after `layer` layers
    "lemma2_low_resid_norm",  # sqrt of Lemma 2's bounds on E||x_layer||^2: same units as mean_resid_norm
    "lemma2_high_resid_norm",
    "mlm_loss",
    "width",
    "heads",
    "init_std",
    "seed",
)


def grad_parameter_name(layer: int) -> str:
    """transformers' name of layer `layer`'s FFN output weight (layers counted from 1), whose gradient we measure."""
    return f"encoder.layer.{layer - 1}.output.dense.weight"


@dataclass
class InitExperiment:
    """Fresh pre-LN and post-LN models, same settings: gradients and residual norms at `depth`, and a depth sweep.

    The result objects may be shared with later experiments through the cache: read them, never modify them.
    """

    depth: int
    width: int
    heads: int
    init_std: float
    seed: int
    sweep_depths: tuple[int, ...]  # ascending, distinct, always including `depth`
    gradients: dict[str, GradientsAtInit]  # architecture -> per-layer gradient norms of the `depth`-layer model
    residuals: dict[str, ResidualNormsAtInit]  # architecture -> [depth + 1] mean residual norms, Lemma 2 bounds
    sweeps: dict[str, list[GradientsAtInit]]  # architecture -> one model per depth of `sweep_depths`, in order

    def sweep_last_layer_norms(self, architecture: str) -> list[float]:
        """The last layer's gradient norm at each depth of `sweep_depths`: Theorem 1's y-values."""
        return [result.last_layer_grad_norm for result in self.sweeps[architecture]]

    def to_rows(self) -> list[dict]:
        """Rows for one CSV, all with ROW_COLUMNS: architecture x stream point ("per_layer"), then x sweep depth."""
        shared = dict(width=self.width, heads=self.heads, init_std=self.init_std, seed=self.seed)
        rows = []
        for arch in ARCHITECTURES:
            grads, resid = self.gradients[arch], self.residuals[arch]
            for layer in range(self.depth + 1):
                has_grad = layer > 0  # the embedding output is a stream point, not a layer with an FFN
                rows.append(
                    _row(
                        section="per_layer",
                        architecture=arch,
                        model_depth=self.depth,
                        layer=layer,
                        grad_parameter=grad_parameter_name(layer) if has_grad else None,
                        grad_norm=grads.layer_grad_norms[layer - 1] if has_grad else None,
                        mean_resid_norm=resid.mean_norms[layer],
                        lemma2_low_resid_norm=resid.lemma2_low[layer],
                        lemma2_high_resid_norm=resid.lemma2_high[layer],
                        mlm_loss=grads.loss,
                        **shared,
                    )
                )
        for arch in ARCHITECTURES:
            for result in self.sweeps[arch]:
                rows.append(
                    _row(
                        section="depth_sweep",
                        architecture=arch,
                        model_depth=result.depth,
                        layer=result.depth,
                        grad_parameter=grad_parameter_name(result.depth),
                        grad_norm=result.last_layer_grad_norm,
                        mlm_loss=result.loss,
                        **shared,
                    )
                )
        return rows

    def to_dict(self) -> dict:
        """Everything as plain JSON-ready values, under the core dataclasses' own field names."""
        return {
            "parameters": {
                "depth": self.depth,
                "width": self.width,
                "heads": self.heads,
                "init_std": self.init_std,
                "seed": self.seed,
                "sweep_depths": list(self.sweep_depths),
            },
            "architectures": {
                arch: {
                    "gradients": asdict(self.gradients[arch]),
                    "residual_norms": asdict(self.residuals[arch]),
                    "depth_sweep": [asdict(result) for result in self.sweeps[arch]],
                }
                for arch in ARCHITECTURES
            },
        }


def _row(**values) -> dict:
    """A CSV row with every column of ROW_COLUMNS, in order; columns a section does not measure are None."""
    return dict.fromkeys(ROW_COLUMNS) | values


def run_init_experiment(
    depth: int,
    width: int = 128,
    init_std: float | None = None,
    seed: int = 0,
    sweep_depths: Sequence[int] = DEFAULT_DEPTHS,
) -> InitExperiment:
    """Measure fresh pre-LN and post-LN models (`init_std=None`: `matched_init_std(width)`); RplnError on bad input."""
    depth = whole_number(depth, "Depth", 1, MAX_DEPTH)
    width = whole_number(width, "Width", min(WIDTHS), max(WIDTHS))
    if width not in WIDTHS or width % HEADS:
        raise RplnError(f"Width must be one of {', '.join(map(str, WIDTHS))}; got {width}.")
    init_std = matched_init_std(width) if init_std is None else _init_std(init_std, width)
    seed = whole_number(seed, "Seed", 0, MAX_SEED)
    depths = tuple(sorted({depth, *(whole_number(d, "Each sweep depth", 1, MAX_DEPTH) for d in sweep_depths)}))

    settings = (width, init_std, seed)
    sweeps = {arch: [_gradients(arch, d, *settings) for d in depths] for arch in ARCHITECTURES}
    return InitExperiment(
        depth=depth,
        width=width,
        heads=HEADS,
        init_std=init_std,
        seed=seed,
        sweep_depths=depths,
        # The sweep already holds a model of the chosen depth: the same numbers, so no second pass.
        gradients={arch: sweeps[arch][depths.index(depth)] for arch in ARCHITECTURES},
        residuals={arch: _residual_norms(arch, depth, *settings) for arch in ARCHITECTURES},
        sweeps=sweeps,
    )


# The app re-runs with the same settings whenever any control moves, and neighbouring depths share
# sweep points, so fresh results are kept per (architecture, depth, width, std, seed). Only the
# numbers are kept, never the models: an entry is a few hundred bytes.
@lru_cache(maxsize=256)
def _gradients(architecture: Architecture, depth: int, width: int, init_std: float, seed: int) -> GradientsAtInit:
    return gradients_at_init(architecture, depth, width=width, heads=HEADS, init_std=init_std, seed=seed)


@lru_cache(maxsize=64)
def _residual_norms(
    architecture: Architecture, depth: int, width: int, init_std: float, seed: int
) -> ResidualNormsAtInit:
    return residual_norms_at_init(architecture, depth, width=width, heads=HEADS, init_std=init_std, seed=seed)


def _init_std(value, width: int) -> float:
    """`value` as a float in (0, MAX_INIT_STD]; the message suggests the std matched to `width`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= MAX_INIT_STD:
        raise RplnError(
            f"Init std must be above 0 and at most {MAX_INIT_STD}; got {value!r}. "
            f"Leave it empty for {matched_init_std(width):.4g}, roberta-large's relative init at width {width}."
        )
    return float(value)
