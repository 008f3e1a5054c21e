"""The "Pre-LN vs Post-LN" tab's actions: compare two models on a text, the experiment at initialisation,
and the recorded training curves. No layout here; errors become messages through handlers.user_errors."""

from __future__ import annotations

import functools
from typing import Any

from rpln_core.errors import RplnError
from rpln_core.init_std import matched_init_std

from .handlers import importing_first, notices_markdown
from .registry import ModelRegistry


@functools.cache
def teaching_engine() -> None:
    """Import what this tab computes with (torch, transformers, plotly) on first use, as the task tabs do."""
    global comparing, curves, init_report, compare_figures, curve_figures, diagram, export, init_figures
    global EXPORT_ROOT, fresh_export_directory, table_rows, ablating, ablation_figures
    from rpln_core import ablation as ablating  # noqa: F401
    from rpln_core import compare as comparing  # noqa: F401
    from rpln_core import curves, init_report  # noqa: F401
    from viz import ablation as ablation_figures  # noqa: F401
    from viz import compare as compare_figures  # noqa: F401
    from viz import curves as curve_figures  # noqa: F401
    from viz import diagram, export, init_figures  # noqa: F401

    from .inside import EXPORT_ROOT, fresh_export_directory, table_rows  # noqa: F401


with_engine = importing_first(teaching_engine)


class TeachingHandlers:
    """The tab's actions, bound to the app's model registry."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def _compare(self, left: str, right: str, text: str, top_k: int):
        return comparing.compare(self.registry.get(left), self.registry.get(right), text, top_k=int(top_k))

    @with_engine
    def compare(self, left: str, right: str, text: str, top_k: float) -> list[Any]:
        """Notices, both layer diagrams, residual / LayerNorm / entropy figures, predictions, downloads."""
        comparison = self._compare(left, right, text, top_k)
        first, second = comparison.models
        tables = comparing.comparison_tables(comparison)
        about = {"text": comparison.text, "models": [first.name, second.name]}
        files = export.write_tables(tables, fresh_export_directory(EXPORT_ROOT), "compare", about, json_name="all")
        return [
            notices_markdown(comparison.notices),
            diagram.layer_diagram(first.layout, title=f"{first.name}: one layer"),
            diagram.layer_diagram(second.layout, title=f"{second.name}: one layer"),
            compare_figures.residual_comparison_figure(comparison),
            compare_figures.layernorm_scale_figure(comparison),
            compare_figures.entropy_comparison_figure(comparison),
            table_rows(compare_figures.fill_mask_rows(comparison)),
            [str(path) for path in files],
        ]

    @with_engine
    def compare_api(self, text: str, left: str = "preln-mini", right: str = "postln-mini", top_k: int = 5) -> dict:
        """The numbers behind the comparison: per model, layer layout, residual norms, LayerNorms, entropy, predictions."""
        return comparing.comparison_summary(self._compare(left, right, text, top_k))

    @with_engine
    def ablation(self, left: str, right: str, text: str, controls: float, seed: float | None) -> list[Any]:
        """Both models' shared LayerNorm outlier dimensions switched off, against random controls: notices,
        the figure, every run per mask, downloads. A model that cannot take part is named in a notice."""
        results, notices = [], []
        for name in dict.fromkeys((left, right)):  # the same model picked twice runs once
            try:
                loaded = self.registry.get(name)
                results.append(ablating.outlier_ablation(loaded, text, controls=controls, seed=seed or 0))
            except RplnError as error:
                notices.append(f"{name}: {error.message}")
        if not results:
            raise RplnError(" ".join(notices))
        notices += [f"{result.model_name}: {notice}" for result in results for notice in result.notices]
        rows = ablation_figures.ablation_rows(results)
        about = {"text": text, "models": [result.model_name for result in results]}
        files = export.write_tables({"runs": rows}, fresh_export_directory(EXPORT_ROOT), "ablation", about, json_name="all")
        return [
            notices_markdown(notices),
            ablation_figures.ablation_figure(results),
            table_rows(rows),
            [str(path) for path in files],
        ]

    @staticmethod
    @with_engine
    def init_experiment(depth: float, width: float, init_std: float | None, seed: float) -> list[Any]:
        """Fresh pre-LN and post-LN models: per-layer gradients, last-layer gradient against depth, residual norms."""
        # the core validates what the user typed; an empty std or seed means the default
        experiment = init_report.run_init_experiment(depth, width, init_std, 0 if seed is None else seed)
        about = experiment.to_dict()
        rows = experiment.to_rows()
        directory = fresh_export_directory(EXPORT_ROOT)
        files = export.write_tables({"rows": rows}, directory, "init", about, json_name="experiment")
        return [
            init_figures.layer_gradients_figure(experiment),
            init_figures.depth_sweep_figure(experiment),
            init_figures.residual_init_figure(experiment),
            [str(path) for path in files],
        ]

    @staticmethod
    def matched_std(width: float) -> float:
        """The init std the experiment defaults to at this width (roberta-large's relative init)."""
        return round(matched_init_std(int(width)), 4)

    @staticmethod
    def curve_choices() -> tuple[list[str], str | None, list[str]]:
        """The recorded settings (labels), the one shown first and the layers its logs hold, read without torch.

        The first is the run without warm-up at 2e-3, where post-LN stalls; reading it here fills the cache
        that the page's first drawing of the curves reads from.
        """
        from rpln_core import curves as recorded

        settings = [setting.label for setting in recorded.available_runs()]
        first = next((label for label in settings if label.endswith("lr 2e-3")), settings[0] if settings else None)
        layers = recorded.load_pair(first)[0].num_layers if first else 0
        return settings, first, layer_choices(layers)

    @staticmethod
    @with_engine
    def training_curves(setting: str, layer: str) -> list[Any]:
        """Loss and gradient-norm curves of the twins for one recorded setting; the raw CSVs to download."""
        pre, post = curves.load_pair(setting)
        chosen = None if layer == WHOLE_MODEL else int(layer.removeprefix("layer "))
        files = [str(curves.CURVES_DIR / pre.setting.file_name(arch)) for arch in ("pre-ln", "post-ln")]
        return [
            curve_figures.loss_curves_figure(pre, post),
            curve_figures.gradient_curves_figure(pre, post, layer=chosen),
            files,
        ]


WHOLE_MODEL = "whole model"


def layer_choices(layers: int) -> list[str]:
    return [f"layer {i}" for i in range(layers)] + [WHOLE_MODEL]
