"""The bundled pre-training logs: which settings exist, each read as a pre-LN / post-LN pair of curves.

`scripts/train_mlm.py` logs one CSV row per step (step, loss, lr, grad_norm_total, grad_norm_layer_{i},
elapsed_s) and `scripts/package_models.py` copies it to `models/curves/<run>.csv`. A run's name says its
setting: `preln` / `postln` are the main twins (warm-up, peak lr 5e-4); `nowarmup-lr2e-3-preln` is a
2,000-step run without warm-up at peak lr 2e-3. Kept free of torch: the app lists and draws these before
any model is loaded.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .catalog import BUNDLED_DIR
from .errors import RplnError

CURVES_DIR = BUNDLED_DIR / "curves"
MAIN_LR = 5e-4  # the main twins' peak lr; their file names do not state it (models/README.md)
# Every eval file records the same unigram-frequency baseline (one corpus, one masking seed); the main
# pre-LN twin's is the canonical copy.
BASELINE_FILE = "preln.json"

_FILE_ARCHITECTURE = {"preln": "pre-ln", "postln": "post-ln"}
# `<prefix>-preln` or bare `preln`; the prefix is what the two architectures of one setting share.
_RUN_NAME = re.compile(r"^(?:(?P<prefix>.+)-)?(?P<arch>preln|postln)$")
_LR_IN_NAME = re.compile(r"(?:^|-)lr(?P<lr>\d+(?:\.\d+)?(?:e[-+]?\d+)?)(?:-|$)")
_LAYER_COLUMN = re.compile(r"^grad_norm_layer_(\d+)$")
_REQUIRED = ("step", "loss", "lr", "grad_norm_total")


# ---------------------------------------------------------------- settings


def format_lr(lr: float) -> str:
    """A learning rate the way the run names write it: 5e-4, 2.5e-3."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


@dataclass(frozen=True)
class RunSettings:
    """One pre-training recipe that was run for both architectures: a pre-LN and a post-LN log."""

    key: str  # the run-name prefix the pair shares: "" for the main twins, "nowarmup-lr2e-3", ...
    warmup: bool
    lr: float | None  # peak learning rate; None when the run name does not state it

    @property
    def label(self) -> str:
        """How the setting is offered to the user, e.g. "with warm-up (lr 5e-4)" or "no warm-up, lr 2e-3"."""
        if self.lr is None:
            return f"{'with' if self.warmup else 'no'} warm-up ({self.key})"
        if self.warmup:
            return f"with warm-up (lr {format_lr(self.lr)})"
        return f"no warm-up, lr {format_lr(self.lr)}"

    def file_name(self, architecture: str) -> str:
        """The log file of this setting for "pre-ln" or "post-ln"."""
        stem = {arch: name for name, arch in _FILE_ARCHITECTURE.items()}[architecture]
        return f"{self.key}-{stem}.csv" if self.key else f"{stem}.csv"

    def sort_key(self) -> tuple:
        # The recipe the bundled models used first, then the no-warm-up runs from the gentlest rate up.
        return (not self.warmup, self.lr is None, self.lr or 0.0, self.key)


def parse_run_name(run: str) -> tuple[RunSettings, str] | None:
    """(setting, architecture) that a run name such as "nowarmup-lr2e-3-preln" states; None for other logs."""
    match = _RUN_NAME.match(run)
    if match is None:
        return None
    prefix = match["prefix"] or ""
    warmup = "nowarmup" not in prefix.split("-")
    lr_match = _LR_IN_NAME.search(prefix)
    lr = float(lr_match["lr"]) if lr_match else (MAIN_LR if not prefix else None)
    return RunSettings(prefix, warmup, lr), _FILE_ARCHITECTURE[match["arch"]]


def available_runs(directory: Path = CURVES_DIR) -> list[RunSettings]:
    """The settings with both a pre-LN and a post-LN log in `directory` (fine-tuning logs are left out)."""
    if not Path(directory).is_dir():
        return []
    found: dict[RunSettings, set[str]] = {}
    for path in Path(directory).glob("*.csv"):
        parsed = parse_run_name(path.stem)
        if parsed is not None:
            found.setdefault(parsed[0], set()).add(parsed[1])
    pairs = [setting for setting, archs in found.items() if archs == set(_FILE_ARCHITECTURE.values())]
    return sorted(pairs, key=RunSettings.sort_key)


def find_setting(name: str, directory: Path = CURVES_DIR) -> RunSettings:
    """The available setting whose label (or key) is `name`; an RplnError listing the choices otherwise."""
    runs = available_runs(directory)
    for setting in runs:
        if name in (setting.label, setting.key):
            return setting
    choices = ", ".join(repr(s.label) for s in runs) or "none"
    raise RplnError(f"No training curves for {name!r} in {directory}. Available: {choices}.")


# ---------------------------------------------------------------- curves


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value to compare by
class TrainingCurve:
    """One run's per-step log. Values are as logged: a diverged run's last row may hold inf or nan."""

    run: str  # the log's name, e.g. "nowarmup-lr2e-3-postln"
    architecture: str  # "pre-ln" | "post-ln", from the run name
    warmup: bool
    lr: float | None  # peak learning rate of the recipe; None when the run name does not state it
    steps: np.ndarray  # [steps] int64, 1-based optimizer steps
    loss: np.ndarray  # [steps] masked-LM training loss of the step's batch
    lr_per_step: np.ndarray  # [steps] the learning rate the step used (0 on step 1 of a warm-up)
    grad_norm_total: np.ndarray  # [steps] whole-model gradient L2 norm, before clipping
    grad_norm_layers: np.ndarray  # [layers, steps] gradient L2 norm of each encoder.layer.{i}
    unigram_loss: float | None = None  # held-out loss of the unigram-frequency baseline; None if not recorded

    @property
    def num_layers(self) -> int:
        return self.grad_norm_layers.shape[0]

    @property
    def setting(self) -> RunSettings:
        match = _RUN_NAME.match(self.run)
        return RunSettings((match["prefix"] or "") if match else self.run, self.warmup, self.lr)

    @property
    def warmup_end(self) -> int | None:
        """The first step at the peak learning rate, if the rate climbed to it; None without warm-up."""
        finite = np.where(np.isfinite(self.lr_per_step), self.lr_per_step, -np.inf)
        if len(finite) == 0:
            return None
        peak = int(np.argmax(finite))
        return int(self.steps[peak]) if peak > 0 else None

    def to_rows(self) -> list[dict]:
        """One dict per step with the log's own column names; inf/nan become None so strict JSON accepts them."""
        columns = {"step": self.steps, "loss": self.loss, "lr": self.lr_per_step}
        columns["grad_norm_total"] = self.grad_norm_total
        columns |= {f"grad_norm_layer_{i}": norms for i, norms in enumerate(self.grad_norm_layers)}
        lists = {name: [_json_number(v) for v in values.tolist()] for name, values in columns.items()}
        return [dict(zip(lists, row)) for row in zip(*lists.values())]


def _json_number(value):
    return None if isinstance(value, float) and not np.isfinite(value) else value


def load_pair(setting: RunSettings | str, directory: Path = CURVES_DIR) -> tuple[TrainingCurve, TrainingCurve]:
    """(pre-LN, post-LN) curves of a setting or its label; an RplnError if a log is missing or malformed."""
    directory = Path(directory)
    if not isinstance(setting, RunSettings):  # a label; None (no logs to choose from) gets find_setting's message
        setting = find_setting(setting, directory)
    baseline = unigram_loss(directory.parent / "eval")
    pre, post = (load_curve(directory / setting.file_name(arch), baseline) for arch in ("pre-ln", "post-ln"))
    return pre, post


def load_curve(path: Path, unigram: float | None = None) -> TrainingCurve:
    """One training log, read once per version of the file (the app asks for it on every request)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise RplnError(f"The training log {path.name} is missing from {path.parent}.") from None
    return _read_curve(str(path), stat.st_mtime_ns, stat.st_size, unigram)


@functools.lru_cache(maxsize=32)
def _read_curve(path: str, mtime_ns: int, size: int, unigram: float | None) -> TrainingCurve:
    # mtime and size are only in the key, so that a rewritten log is read again.
    name = Path(path).name
    parsed = parse_run_name(Path(path).stem)
    if parsed is None:
        expected = "a name like preln.csv or nowarmup-lr2e-3-postln.csv"
        raise RplnError(f"{name} is not a pre-training log: expected {expected}.")
    setting, architecture = parsed
    header, rows = _read_table(Path(path))
    layers = sorted((int(m[1]), column) for column in header if (m := _LAYER_COLUMN.match(column)))
    missing = [c for c in _REQUIRED if c not in header] + ([] if layers else ["grad_norm_layer_0"])
    if missing:
        raise RplnError(f"The training log {name} lacks the column(s) {', '.join(missing)}.")
    index = {column: i for i, column in enumerate(header)}
    values = {column: _column(rows, index[column], name, column) for column in (*_REQUIRED, *(c for _, c in layers))}
    steps = values.pop("step")
    if not np.all(np.isfinite(steps)) or np.any(steps != np.round(steps)):
        raise RplnError(f"The training log {name} has a step that is not a whole number.")
    curve = TrainingCurve(
        run=Path(path).stem,
        architecture=architecture,
        warmup=setting.warmup,
        lr=setting.lr,
        steps=steps.astype(np.int64),
        loss=values["loss"],
        lr_per_step=values["lr"],
        grad_norm_total=values["grad_norm_total"],
        grad_norm_layers=np.stack([values[c] for _, c in layers]),
        unigram_loss=unigram,
    )
    # Cached curves are shared between requests: make their arrays read-only so no caller can alter another's.
    for field in ("steps", "loss", "lr_per_step", "grad_norm_total", "grad_norm_layers"):
        getattr(curve, field).setflags(write=False)
    return curve


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            table = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise RplnError(f"Could not read the training log {path.name}: {error}.") from None
    if len(table) < 2:
        raise RplnError(f"The training log {path.name} has no rows.")
    header, rows = table[0], [row for row in table[1:] if row]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise RplnError(f"Line {number} of {path.name} has {len(row)} values for {len(header)} columns.")
    return header, rows


def _column(rows: list[list[str]], index: int, name: str, column: str) -> np.ndarray:
    # float() reads the "inf" and "nan" a diverged step writes; an empty cell is a value that was not logged.
    try:
        return np.array([float(row[index]) if row[index].strip() else np.nan for row in rows], dtype=np.float64)
    except ValueError:
        bad = next(n for n, row in enumerate(rows, start=2) if not _is_number(row[index]))
        text = rows[bad - 2][index]
        raise RplnError(f"Line {bad} of {name} has {text!r} in {column}, which is not a number.") from None


def _is_number(text: str) -> bool:
    try:
        float(text or "nan")
        return True
    except ValueError:
        return False


def unigram_loss(eval_dir: Path = BUNDLED_DIR / "eval") -> float | None:
    """Held-out loss of the unigram-frequency baseline, as the training script recorded it; None if absent."""
    path = Path(eval_dir) / BASELINE_FILE
    try:
        stat = path.stat()
    except OSError:
        return None
    return _read_unigram(str(path), stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_unigram(path: str, mtime_ns: int) -> float:
    try:
        return float(json.loads(Path(path).read_text(encoding="utf-8"))["unigram"]["loss"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RplnError(f"{path} does not hold a unigram baseline loss: {error!r}.") from None


# ---------------------------------------------------------------- series


def moving_average(values, window: int) -> np.ndarray:
    """Trailing mean over the last `window` steps (fewer at the start), skipping inf/nan; nan where none is finite."""
    values = np.asarray(values, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be at least 1, not {window}.")
    finite = np.isfinite(values)
    # Sum each window directly: differences of a running cumsum lose small values after a 1e9 spike.
    padded = np.concatenate([np.zeros(window - 1), np.where(finite, values, 0.0)])
    counted = np.concatenate([np.zeros(window - 1), finite.astype(np.float64)])
    sums = np.lib.stride_tricks.sliding_window_view(padded, window).sum(axis=1)
    counts = np.lib.stride_tricks.sliding_window_view(counted, window).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def downsample(steps, values, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` (step, value) pairs: the first and last, and each bucket's lowest and highest value.

    Keeping both extremes preserves the envelope of a noisy curve and every spike, where striding or bucket
    means would hide a gradient explosion; keeping the last step keeps where a curve ends. A bucket with no
    finite value keeps one nan (a gap in the line).
    """
    steps, values = np.asarray(steps), np.asarray(values, dtype=np.float64)
    if len(values) <= max_points:
        return steps, values
    if max_points < 4:
        raise ValueError(f"max_points must be at least 4 (both ends and one bucket's extremes), not {max_points}.")
    size = -(-len(values) // ((max_points - 2) // 2))  # ceil: at most (max_points - 2) // 2 buckets
    buckets = -(-len(values) // size)
    pad = buckets * size - len(values)
    finite = np.isfinite(values)
    low = np.pad(np.where(finite, values, np.inf), (0, pad), constant_values=np.inf).reshape(buckets, size)
    high = np.pad(np.where(finite, values, -np.inf), (0, pad), constant_values=-np.inf).reshape(buckets, size)
    starts = np.arange(buckets) * size
    lowest, highest = starts + low.argmin(axis=1), starts + high.argmax(axis=1)
    highest[~np.isfinite(low.min(axis=1))] = -1  # an all-nan bucket: its first point alone is gap enough
    picks = np.unique(np.concatenate([[0, len(values) - 1], lowest, highest]))  # sorted, duplicates merged
    picks = picks[(picks >= 0) & (picks < len(values))]
    out = values[picks]
    out[~np.isfinite(out)] = np.nan
    return steps[picks], out
