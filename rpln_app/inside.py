"""The "inside the model" panel's values, computed from one trace: the same for every task tab."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from rpln_core import Trace
from viz import attention, export, layernorm, lens, residual

from .keys import INSIDE_KEYS

# Gradio copies returned files into its own cache, so only the newest few export folders need to stay.
EXPORT_ROOT = Path(tempfile.gettempdir()) / "rpln-exports"
EXPORTS_KEPT = 16


@dataclass
class InsideValues:
    """One value per INSIDE_KEYS entry (a figure, an image, table rows, a choice or file paths)."""

    values: dict[str, Any]

    def ordered(self) -> list[Any]:
        return [self.values[key] for key in INSIDE_KEYS]


def inside_values(trace: Trace, layer: int = 0, head: int = 0, export_root: Path | None = None) -> InsideValues:
    """Every view of the panel for `trace`, starting on the attention of (`layer`, `head`)."""
    ln_names = [stats.name for stats in trace.layernorms]
    first_ln = ln_names[1] if len(ln_names) > 1 else ln_names[0]
    directory = fresh_export_directory(EXPORT_ROOT if export_root is None else export_root)
    values = {
        "head_view": attention.head_view(trace, layer, head),
        "model_view": attention.model_view(trace, selected=(layer, head)),
        "entropy": attention.entropy_heatmap(trace),
        "rollout": attention.rollout_heatmap(trace),
        "sinks": attention.sinks_figure(trace),
        "ln_scale": layernorm.scale_heatmap(trace),
        "ln_table": table_rows(layernorm.stats_table(trace)),
        "ln_choice": (ln_names, first_ln),
        "gamma_beta": layernorm.gamma_beta_figure(trace, first_ln),
        "abs_input": layernorm.abs_input_heatmap(trace),
        "resid_norm": residual.norm_figure(trace),
        "sublayer": residual.sublayer_figure(trace),
        "massive": residual.massive_figure(trace),
        "lens": lens.lens_figure(trace),
        "exports": [str(path) for path in export.write_exports(trace, directory)],
    }
    return InsideValues(values)


def fresh_export_directory(root: Path, kept: int | None = None) -> Path:
    """A new folder under `root` for one request's downloads; the oldest beyond `kept` (default EXPORTS_KEPT)
    are removed, so every tab's downloads together hold at most that many requests' files on disk."""
    kept = EXPORTS_KEPT if kept is None else kept
    root.mkdir(parents=True, exist_ok=True)
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=_modified)
    for old in folders[: max(0, len(folders) - kept + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix="export-", dir=root))


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # removed meanwhile by another request's pruning: the oldest of all
        return 0.0


def table_rows(rows: list[dict]) -> dict[str, list]:
    """Rows of dicts as the {headers, data} a table component takes; floats shortened for reading."""
    if not rows:
        return {"headers": [], "data": []}
    headers = list(rows[0])
    shorten = lambda v: float(f"{v:.4g}") if isinstance(v, float) else v  # noqa: E731
    return {"headers": headers, "data": [[shorten(row[h]) for h in headers] for row in rows]}


def empty_figure(message: str) -> go.Figure:
    """A blank chart that says why it is blank (e.g. no logit lens on a classification checkpoint)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(height=160, xaxis_visible=False, yaxis_visible=False)
    return fig
