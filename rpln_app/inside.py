"""The "inside the model" panel's values, computed from one trace: the same for every task tab."""

from __future__ import annotations

import html
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from gradio.components.plot import PlotData

from rpln_core import CaptureOptions, Trace, frames
from rpln_core.errors import RplnError
from viz import attention, bertviz_views, export, layernorm, lens, residual

from .keys import BERTVIZ_VIEWS, DRAWN_ON_OPEN, INSIDE_KEYS

# Gradio copies returned files into its own cache, so only the newest few export folders need to stay.
EXPORT_ROOT = Path(tempfile.gettempdir()) / "rpln-exports"
EXPORTS_KEPT = 16

# The task tabs' runs keep the queries and keys, which bertviz's neuron view draws. They are cheap next to what a
# run keeps anyway (bench/bench_app.py --bertviz measures it: on the bundled model +57 KB of a 180 KB trace at 14
# tokens and no measurable time; at 128 tokens on a 24-layer, 1024-wide model 12 MiB, as much as the attentions), and
# keeping them means the neuron view re-draws from the stored trace, where capturing on demand would run the model
# again for every visit of the view. The trace store counts them in its memory budget like any other tensor.
CAPTURE = CaptureOptions(queries_and_keys=True)


def bertviz_pickers(trace: Trace, view: str) -> tuple[bool, bool]:
    """Which of the panel's (layer, head) pickers `view` takes: the head view starts on a layer and shows its heads
    (its colour squares toggle them), so it takes the head only when it shows some of them, the window around it;
    the model view shows every head it includes; the neuron view one head."""
    if view == "head":
        return True, len(bertviz_views.head_view_heads(trace)) < trace.num_heads
    return {"model": (False, False), "neuron": (True, True)}[view]


# Where the app serves viz/assets (app.py's static paths): the pages in the iframes load the libraries from there,
# once per browser, instead of carrying 394 KB of them in every page. Downloads inline them.
ASSET_URL = f"/gradio_api/file={bertviz_views.ASSET_DIR.as_posix()}"
# Registered here, where the pages that load from it are made (Gradio checks the list on each request).
gr.set_static_paths(bertviz_views.static_paths())


@dataclass(frozen=True)
class RunAbout:
    """What a task tab ran, for downloads that stand alone: the task, model, inputs (text and settings) and result."""

    task: str  # "fill-mask", "classification" or "qa"
    model: str
    inputs: dict[str, Any]  # the engine call's keyword arguments: texts are the input, the rest settings
    result: pd.DataFrame | None = None  # the task's output, rpln_core.frames.result_frame
    when: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @classmethod
    def of(cls, record: Any, result: Any = None) -> RunAbout:
        """From a TraceRecord (the run's task, model and inputs) and the task result, if there is one at hand."""
        return cls(record.task, record.model, dict(record.inputs), None if result is None else frames.result_frame(result))

    @property
    def text(self) -> str:
        """The input's texts joined: what the file names say the run was about."""
        return " ".join(value for value in self.inputs.values() if isinstance(value, str) and value)

    def stem(self) -> str:
        return export.run_stem(self.model, self.text, self.when)

    def document(self) -> dict[str, Any]:
        """The description the exports carry (JSON-ready): task, model, input, settings and the time."""
        settings = {name: value for name, value in self.inputs.items() if not isinstance(value, str)}
        settings["queries_and_keys"] = CAPTURE.queries_and_keys
        return {
            "task": self.task,
            "model": self.model,
            "input": {name: value for name, value in self.inputs.items() if isinstance(value, str)},
            "settings": settings,
            "exported_at": self.when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }


@dataclass
class InsideValues:
    """One value per INSIDE_KEYS entry (a figure, an image, a table, a choice, HTML or file paths)."""

    values: dict[str, Any]

    def ordered(self) -> list[Any]:
        return [self.values[key] for key in INSIDE_KEYS]


def inside_values(trace: Trace, layer: int = 0, head: int = 0, export_root: Path | None = None) -> InsideValues:
    """The panel's values for a run of `trace`: the Attention tab's views, on (`layer`, `head`); None for the views
    of the tabs in DRAWN_ON_OPEN (tab_values draws them), bertviz's pickers (head view, `layer`) and a placeholder
    for its page, and no downloads: those are made only while their tab is open (BERTVIZ_ON_OPEN's comment says
    why)."""
    directory = fresh_export_directory(EXPORT_ROOT if export_root is None else export_root)
    values = {
        "head_view": attention.head_view(trace, layer, head),
        "model_view": model_view_png(trace, (layer, head), directory),
        "entropy": attention.entropy_heatmap(trace),
        "rollout": attention.rollout_heatmap(trace),
        "sinks": attention.sinks_figure(trace),
        **{key: None for keys in DRAWN_ON_OPEN.values() for key in keys},
        "bertviz_view": "head",
        "bertviz_layer": layer,
        "bertviz_head": head,
        "bertviz": message_html(BERTVIZ_ON_OPEN),
        "bertviz_download": None,
        "exports": None,
    }
    return InsideValues(values)


def tab_values(trace: Trace, tab: str) -> dict[str, Any]:
    """The views of one of the panel's DRAWN_ON_OPEN tabs, by key: "layernorm" (the LayerNorm choice as (names,
    first)), "residual" or "lens" (None where the logit lens cannot be drawn)."""
    if tab == "layernorm":
        names = [stats.name for stats in trace.layernorms]
        first = names[1] if len(names) > 1 else names[0]  # the first inside the layers: embed.ln is outside them
        return {"ln_scale": layernorm.scale_heatmap(trace), "ln_table": table_rows(layernorm.stats_table(trace)),
                "ln_choice": (names, first), "gamma_beta": layernorm.gamma_beta_figure(trace, first),
                "abs_input": layernorm.abs_input_heatmap(trace)}
    if tab == "residual":
        return {"resid_norm": residual.norm_figure(trace), "sublayer": residual.sublayer_figure(trace),
                "massive": residual.massive_figure(trace)}
    if tab == "lens":
        return {"lens": lens.lens_figure(trace)}
    raise RplnError(f"The panel has no tab {tab!r} drawn on opening: choose one of {', '.join(DRAWN_ON_OPEN)}.")


def write_downloads(trace: Trace, directory: Path, about: RunAbout | None) -> list[str]:
    """The statistics downloads: a run's (named for it, with its description and result), else the trace's."""
    if about is None:
        return [str(path) for path in export.write_exports(trace, directory)]
    paths = export.write_run_exports(trace, directory, about.document(), about.result, about.stem(),
                                     export.trace_tables(trace))
    return [str(path) for path in paths]


def bertviz_values(
    trace: Trace, view: str, layer: int, head: int, directory: Path, about: RunAbout | None = None
) -> tuple[str, str | None]:
    """bertviz's `view` of `trace` for the panel: the page in an iframe (libraries from ASSET_URL), and the same
    view as a standalone file in `directory` to download (None, with a message instead of the page, if the view
    cannot be drawn from this trace)."""
    if view not in BERTVIZ_VIEWS:
        raise RplnError(f"There is no bertviz view called {view!r}: choose one of {', '.join(BERTVIZ_VIEWS)}.")
    options = {"head": {"layer": layer, "include_heads": bertviz_views.head_view_heads(trace, head)}, "model": {},
               "neuron": {"layer": layer, "head": head}}[view]
    try:
        page = bertviz_views.PAGES[view](trace, **options)
    except RplnError as error:  # the neuron view of a trace without queries and keys
        return message_html(NO_QUERIES if trace.queries is None else error.message), None
    stem = about.stem() if about else export.run_stem(trace.model_name, export.trace_words(trace), _now())
    path = page.write(directory / f"{stem}-{view}-view.html")
    return bertviz_views.iframe_html(page.html(ASSET_URL), title=f"bertviz {BERTVIZ_VIEWS[view].lower()}"), str(path)


# Why a run leaves out every panel tab's views but the Attention tab's, to be made when their tab is opened (and after
# each run while it is open): on the large model at 128 tokens bertviz's head view was 2.2 MB of a 5.9 MB response
# and 0.47 s of the run's 1.37 s, the downloads' tables and files 0.15 s more and the other tabs' charts about 0.2 s
# (bench/bench_app.py), paid by every run whether or not the visitor looks at them.
BERTVIZ_ON_OPEN = "bertviz's views are drawn while this tab is open, from the tab's latest run."

NO_QUERIES = ("The neuron view needs the queries and keys of the pass, and this run did not keep them: on an input "
              "this long they would take more memory than the app allows for them (see the run's notices).")


def message_html(text: str) -> str:
    """A line of text where a view would be, escaped (it may quote the input)."""
    return f'<p style="padding: 1em; opacity: .8">{html.escape(text)}</p>'


def _now() -> datetime:
    return datetime.now(timezone.utc)


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


def table_rows(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """A table for gr.Dataframe (which takes a frame as it is), floats shortened to 4 significant digits for reading."""
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    for column in frame.columns[frame.dtypes.map(pd.api.types.is_float_dtype)]:
        frame[column] = frame[column].map(lambda value: float(f"{value:.4g}"), na_action="ignore")
    return frame


def png_named(fig: go.Figure, filename: str) -> PlotData:
    """`fig` for gr.Plot with its modebar's "download as PNG" saving `filename`.png, not plotly's `newplot.png`.

    gr.Plot sends the figure's JSON and hands its `config` key (which Figure.to_json leaves out) to Plotly.react, so
    the config is appended to that JSON object."""
    config = {"toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}
    return PlotData(type="plotly", plot=f'{fig.to_json()[:-1]},"config":{json.dumps(config)}}}')


def name_png_downloads(values: dict[str, Any], trace: Trace) -> None:
    """Replace every figure among the panel's `values` by png_named: its PNG named for its chart and the input."""
    for key, value in values.items():
        if isinstance(value, go.Figure):
            values[key] = png_named(value, chart_filename(trace, key))


def model_view_png(trace: Trace, selected: tuple[int, int], directory: Path | None = None) -> str:
    """The model view with the `selected` (layer, head) framed, as a PNG file in `directory` (default a fresh export
    folder) named for the chart and the input: Gradio would save a returned image as `image.png`, the name its
    download button then offers."""
    directory = fresh_export_directory(EXPORT_ROOT) if directory is None else directory
    path = directory / f"{chart_filename(trace, 'model-view')}_layer{selected[0]}-head{selected[1]}.png"
    # zlib level 3: on the large model's mosaic 46 ms and 0.40 MB, against 139 ms and 0.37 MB at PIL's default 6.
    attention.model_view(trace, selected=selected).save(path, format="PNG", compress_level=3)
    return str(path)


def chart_filename(trace: Trace, chart: str) -> str:
    """A chart's PNG name: model, chart and the start of the input, e.g. `preln-mini_entropy_the-cat-sat`."""
    return f"{export.model_slug(trace.model_name)}_{export.slug(chart, 30)}_{export.slug(export.trace_words(trace), 40)}"


def empty_figure(message: str) -> go.Figure:
    """A blank chart that says why it is blank (e.g. no logit lens on a classification checkpoint)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(height=160, xaxis_visible=False, yaxis_visible=False)
    return fig
