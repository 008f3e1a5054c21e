"""The "Pre-LN vs Post-LN" tab's actions: compare two models on a text, the experiment at initialisation,
and the recorded training curves. No layout here; errors become messages through handlers.user_errors."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from rpln_core.budgets import check_top_k
from rpln_core.checks import whole_number
from rpln_core.errors import RplnError
from rpln_core.init_std import matched_init_std

from . import inputs as check
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
    """The tab's actions, bound to the app's model registry and the folder of recorded training curves."""

    def __init__(self, registry: ModelRegistry, curves_dir: Path | None = None):
        from rpln_core import curves as recorded  # without torch: the page lists the curves before any model

        self.registry = registry
        self.curves_dir = Path(recorded.CURVES_DIR if curves_dir is None else curves_dir)

    def _compare(self, left: str, right: str, text: str, top_k, what: str = "top_k"):
        text, top_k = check.text(text, "text"), check_top_k(top_k, what)
        return comparing.compare(self.registry.get(left), self.registry.get(right), text, top_k=top_k)

    @with_engine
    def compare(self, left: str, right: str, text: str, top_k: float) -> list[Any]:
        """Notices, both layer diagrams, residual / LayerNorm / entropy figures, predictions, downloads."""
        comparison = self._compare(left, right, text, top_k, "Top k")
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
    def compare_api(self, text: str, left: str, right: str, top_k: int = 5) -> dict:
        """The numbers behind the comparison: per model, layer layout, residual norms, LayerNorms, entropy, predictions."""
        return comparing.comparison_summary(self._compare(left, right, text, top_k))

    @with_engine
    def ablation(self, left: str, right: str, text: str, controls: float, seed: float | None) -> list[Any]:
        """Both models' shared LayerNorm outlier dimensions switched off, against random controls: notices,
        the figure, every run per mask, downloads. A model that cannot take part is named in a notice."""
        text = check.text(text, "text")
        models = (check.model(left, "Left model"), check.model(right, "Right model"))
        results, notices = [], []
        for name in dict.fromkeys(models):  # the same model picked twice runs once
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
        return round(matched_init_std(whole_number(width, "Width", 1, 2**16)), 4)

    def curve_choices(self) -> tuple[list[str], str | None, list[str]]:
        """The recorded settings (labels), the one shown first and the layers its logs hold, read without torch.

        The first is the run without warm-up at 2e-3, where post-LN stalls; reading it here fills the cache
        that the page's first drawing of the curves reads from. Missing or unreadable logs leave the choices
        empty: the page still opens, and its curves section says what is wrong.
        """
        from rpln_core import curves as recorded

        settings = [setting.label for setting in recorded.available_runs(self.curves_dir)]
        first = next((label for label in settings if label.endswith("lr 2e-3")), settings[0] if settings else None)
        try:
            layers = recorded.load_pair(first, self.curves_dir)[0].num_layers if first else 0
        except RplnError:
            layers = 0
        return settings, first, layer_choices(layers)

    @with_engine
    def training_curves(self, setting: str, layer: str) -> list[Any]:
        """A notice (empty when all is well), the twins' loss and gradient-norm curves for one recorded setting,
        and the raw CSVs to download. What keeps them from being drawn goes in the notice: this runs as the
        page opens, where an error toast would greet every visitor."""
        try:
            pre, post = self._curves(setting)
            chosen = None if layer == WHOLE_MODEL else layer_number(check.text(layer, "layer choice"), pre.num_layers)
        except RplnError as error:
            return [notices_markdown([error.message]), None, None, []]
        files = [str(self.curves_dir / pre.setting.file_name(arch)) for arch in ("pre-ln", "post-ln")]
        return [
            "",
            curve_figures.loss_curves_figure(pre, post),
            curve_figures.gradient_curves_figure(pre, post, layer=chosen),
            files,
        ]

    def _curves(self, setting: str):
        if not curves.available_runs(self.curves_dir):
            # No server path in the message: visitors of a public app read it.
            raise RplnError(
                "The recorded training curves are missing: this installation has no pair of pre-LN and post-LN "
                "logs. They ship with the bundled models, in models/curves (see models/README.md)."
            )
        return curves.load_pair(check.text(setting, "Run"), self.curves_dir)


WHOLE_MODEL = "whole model"


def layer_choices(layers: int) -> list[str]:
    return [f"layer {i}" for i in range(layers)] + [WHOLE_MODEL]


def layer_number(choice: str, layers: int) -> int:
    """The layer of a "layer {i}" choice, if the logs have it."""
    if choice not in layer_choices(layers):
        raise RplnError(f"The layer choice must be one of: {', '.join(layer_choices(layers))}; got {choice!r}.")
    return int(choice.removeprefix("layer "))
