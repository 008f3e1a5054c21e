"""The "Pre-LN vs Post-LN" lesson: its steps, and its actions (compare two models on a text, switch off outlier
dimensions, the experiment at initialisation, the recorded training curves), plus every step's result on arrival,
computed once and cached. No layout here; errors become messages through handlers.user_errors."""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, Callable

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
log = logging.getLogger("rpln_app")

COMPARE_TEXT = "In the beginning God created the heaven and the <mask>."


@dataclass(frozen=True)
class LessonStep:
    """One step of the lesson: one idea, and what to look for in its charts, in plain words."""

    number: int
    title: str
    idea: str  # Markdown, a sentence or two
    look_for: str  # Markdown; true of the charts the page opens with (the bundled twins, the defaults)


LESSON: tuple[LessonStep, ...] = (
    LessonStep(
        1,
        "Where the LayerNorm sits",
        "Both kinds of model stack the same layers: self-attention and a feed-forward network, each with a "
        "residual connection around it. The only difference is where each LayerNorm sits.",
        "Follow the green residual path. In **pre-LN** (left) it branches off *before* each orange LayerNorm "
        "and rejoins at the +, so the stream it carries is never normalised inside a layer (only once, by the "
        "final LayerNorm after the last layer). In **post-LN** (right) each LayerNorm comes right *after* a +: "
        "the whole stream is normalised after every addition.",
    ),
    LessonStep(
        2,
        "What happens to the residual stream",
        "The residual stream is what each layer reads from and adds to. Same text, both models: how long is the "
        "stream after each layer, and how hard must each LayerNorm squeeze its input?",
        "On the left, the blue pre-LN line climbs layer after layer, because nothing normalises the stream; the "
        "red post-LN line stays flat, because every addition is normalised. On the right, from `blocks.0` to "
        "`blocks.3`, pre-LN's 1/σ falls: its LayerNorms divide the growing stream by a growing σ, which keeps "
        "each sublayer's input the same size. Post-LN's stays level.",
    ),
    LessonStep(
        3,
        "Gradients at initialisation",
        "Why does this matter for training? Build fresh, untrained models of both kinds here and now, and "
        "measure the gradient each layer gets from one masked-LM loss (Xiong et al. 2020).",
        "On the right, post-LN's last-layer gradient stays about level however deep the model is, while "
        "pre-LN's gets smaller as the model gets deeper. Large, undamped first steps are why post-LN needs a "
        "learning-rate warm-up.",
    ),
    LessonStep(
        4,
        "Training without warm-up",
        "The bundled twins were also trained without a learning-rate warm-up, at several learning rates. These "
        "are the logs of those runs.",
        "Without warm-up at 2e-3, the red post-LN loss stays stuck at the dotted unigram baseline (a model that "
        "only learned word frequencies) while blue pre-LN keeps learning. On the right, post-LN's layer-0 "
        "gradient falls by about five orders of magnitude in the first fifty steps: that layer stops learning.",
    ),
    LessonStep(
        5,
        "Outlier dimensions",
        "Trained LayerNorms grow a few dimensions with outsized γ and β (Kovaleva et al. 2021). Does a model "
        "rely on them? Switch them off in every LayerNorm, on the text above, and compare with random "
        "dimensions.",
        "Compare each model's middle bar (its outlier dimensions off) with its right bar (as many random "
        "dimensions off; the whisker runs from the lowest to the highest). An outlier bar beyond the whisker "
        "means the model relies on those dimensions more than on random ones; how far it moves says how much. On the "
        "default text neither twin breaks, unlike BERT in Kovaleva et al.: pre-LN's prediction moves more than "
        "with random dimensions but only slightly (a KL of about 0.01 nats), and post-LN's stays within its "
        "random range.",
    ),
)


@dataclass(frozen=True)
class LessonStart:
    """The values the lesson's controls show when the page opens: its results on arrival are computed for them."""

    left: str
    right: str
    text: str = COMPARE_TEXT
    top_k: int = 5
    controls: int = 3  # random sets of dimensions the outlier step compares with
    ablation_seed: int = 0
    depth: int = 12
    width: int = 128
    init_seed: int = 0
    curve_setting: str | None = None  # the first of `curve_choices`, where post-LN stalls
    curve_layer: str = "layer 0"

    @property
    def init_std(self) -> float:
        return TeachingHandlers.matched_std(self.width)


class TeachingHandlers:
    """The tab's actions, bound to the app's model registry and the folder of recorded training curves."""

    def __init__(self, registry: ModelRegistry, curves_dir: Path | None = None):
        from rpln_core import curves as recorded  # without torch: the page lists the curves before any model

        self.registry = registry
        self.curves_dir = Path(recorded.CURVES_DIR if curves_dir is None else curves_dir)
        # Results on arrival: one list of output values per part of the lesson and start, computed once.
        self._arrived: dict[tuple, list[Any]] = {}
        self._arrival_lock = threading.Lock()
        self._arrival_exports: Path | None = None

    def _compare(self, left: str, right: str, text: str, top_k, what: str = "top_k"):
        text, top_k = check.text(text, "text"), check_top_k(top_k, what)
        return comparing.compare(self.registry.get(left), self.registry.get(right), text, top_k=top_k)

    @with_engine
    def compare(self, left: str, right: str, text: str, top_k: float, *, exports: Path | None = None) -> list[Any]:
        """Notices, both layer diagrams, residual / LayerNorm / entropy figures, predictions, downloads
        (written to `exports`, by default a fresh folder)."""
        comparison = self._compare(left, right, text, top_k, "Top k")
        first, second = comparison.models
        tables = comparing.comparison_tables(comparison)
        about = {"text": comparison.text, "models": [first.name, second.name]}
        files = export.write_tables(tables, exports or fresh_export_directory(EXPORT_ROOT), "compare", about,
                                    json_name="all")
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
    def ablation(self, left: str, right: str, text: str, controls: float, seed: float | None, *,
                 exports: Path | None = None) -> list[Any]:
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
        files = export.write_tables({"runs": rows}, exports or fresh_export_directory(EXPORT_ROOT), "ablation", about,
                                    json_name="all")
        return [
            notices_markdown(notices),
            ablation_figures.ablation_figure(results),
            table_rows(rows),
            [str(path) for path in files],
        ]

    @staticmethod
    @with_engine
    def init_experiment(depth: float, width: float, init_std: float | None, seed: float, *,
                        exports: Path | None = None) -> list[Any]:
        """Fresh pre-LN and post-LN models: per-layer gradients, last-layer gradient against depth, residual norms."""
        # the core validates what the user typed; an empty std or seed means the default
        experiment = init_report.run_init_experiment(depth, width, init_std, 0 if seed is None else seed)
        about = experiment.to_dict()
        rows = experiment.to_rows()
        directory = exports or fresh_export_directory(EXPORT_ROOT)
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

    # ------------------------------------------------------------------ results on arrival

    def lesson_start(self, left: str, right: str) -> LessonStart:
        """What the lesson opens with: these two models, the default text and settings, the first recorded run."""
        return LessonStart(left, right, curve_setting=self.curve_choices()[1])

    def on_arrival(self, start: LessonStart) -> list[Any]:
        """A notice (empty when every step could be drawn), then every step's outputs in the order of
        `arrival_parts`: computed on the first call (seconds), then served from a cache.

        A part that fails is named in the notice, left empty, and tried again on the next call, so a model that
        could not load for a minute does not leave the lesson empty for good. Never raises: this runs as the
        page opens, where an error toast would greet every visitor."""
        values, failed = [], []
        for name, count, compute in self.arrival_parts(start):
            try:
                values += self._arrival(name, start, compute)
            except RplnError as error:
                failed.append(f"{name}: {error.message}")
                values += [None] * count
            except Exception:  # noqa: BLE001 - the page must open whatever went wrong
                log.exception("the lesson's %s could not be computed on arrival", name)
                failed.append(f"{name}: something went wrong; its button runs it again.")
                values += [None] * count
        return [notices_markdown(failed), *values]

    def arrival_parts(self, start: LessonStart) -> list[tuple[str, int, Callable[[Path], list[Any]]]]:
        """(name, number of outputs, compute(exports folder)) for each event whose outputs the page opens with,
        in the order `on_arrival` returns them: the comparison (steps 1 and 2 and the "more" section), the
        outlier step, the experiment, the curves."""
        return [
            ("steps 1 and 2", 8, lambda exports: self.compare(start.left, start.right, start.text, start.top_k,
                                                               exports=exports)),
            ("step 5", 4, lambda exports: self.ablation(start.left, start.right, start.text, start.controls,
                                                        start.ablation_seed, exports=exports)),
            ("step 3", 4, lambda exports: self.init_experiment(start.depth, start.width, start.init_std,
                                                               start.init_seed, exports=exports)),
            ("step 4", 4, lambda exports: self.training_curves(start.curve_setting, start.curve_layer)),
        ]

    def _arrival(self, name: str, start: LessonStart, compute: Callable[[Path], list[Any]]) -> list[Any]:
        """`compute`'s outputs for this part and start, from the cache if there. One lock: the first visitors
        wait for one computation instead of starting one each. The downloads go to a folder of their own,
        since the export folders keep only the newest few requests and these files serve every visitor."""
        key = (name, *astuple(start))
        with self._arrival_lock:
            if key not in self._arrived:
                if self._arrival_exports is None:
                    self._arrival_exports = Path(tempfile.mkdtemp(prefix="rpln-lesson-"))
                self._arrived[key] = compute(self._arrival_exports)
            return self._arrived[key]

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
