"""The statistics of a trace as tables, and as files to download: one JSON with every table, one CSV per table.

A run's downloads (write_run_exports) stand alone: the JSON holds what was run (task, model, input text, settings,
the task's result, software versions, when) beside the tables, an `about` CSV holds the same description for the
CSVs, and every name carries the model, the input and the time, so a second download never replaces the first.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any, Mapping

import orjson
import pandas as pd

from rpln_core import frames
from rpln_core.capture import Trace

from .layernorm import stats_table

Table = pd.DataFrame | list[dict]  # a frame, or rows of dicts (the experiments' tables), written as given


def trace_tables(trace: Trace) -> dict[str, pd.DataFrame]:
    """Tables keyed by name: "layers" (one row per layer), "layernorms" (per LayerNorm), "tokens" (per token)."""
    return {"layers": frames.layers_frame(trace), "layernorms": stats_table(trace), "tokens": token_table(trace)}


def token_table(trace: Trace) -> pd.DataFrame:
    """rpln_core.frames.tokens_frame, then each token's residual norm entering the first layer (`embed_norm`) and
    after each layer (`resid_post_norm[l]`): the one table a spreadsheet reader wants."""
    table = frames.tokens_frame(trace)
    table["embed_norm"] = trace.resid_pre_norm[0].float().numpy()
    for layer, norms in enumerate(trace.resid_post_norm.float().numpy()):
        table[f"resid_post_norm[{layer}]"] = norms
    return table


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe version of `text`: ASCII letters, digits and single dashes, never empty."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "trace"


def model_slug(model_name: str) -> str:
    """The model's last path part (of a local directory or a Hub id) as a slug: "andreasmadsen/m0.40" -> "m0-40"."""
    return slug(model_name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1], 40)


def trace_words(trace: Trace) -> str:
    """The input as the trace's tokens spell it (specials left out, a space where the offsets leave a gap or the
    segment changes): what a file name can say the input was, when the typed text is not at hand."""
    tokens, words, previous = trace.tokens, "", None
    for text, (start, end), special, segment in zip(tokens.strings, tokens.offsets, tokens.special, tokens.segments):
        if special:
            continue
        if previous is not None and (segment != previous[0] or start > previous[1]):
            words += " "
        words, previous = words + text, (segment, end)
    return words


def run_stem(model_name: str, text: str, when: datetime) -> str:
    """A run's file-name stem: model, the start of the input and the time to the millisecond (UTC), e.g.
    `preln-mini_the-cat-sat-on-the-mask_20251201T171512.345Z`."""
    stamp = when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    return f"{model_slug(model_name)}_{slug(text, 40)}_{stamp}"


@cache
def software_versions() -> dict[str, str]:
    """The versions that made the numbers: this project's, transformers' and torch's (and bertviz, pandas)."""
    versions = {"preln-explorer": _own_version()}
    for package in ("transformers", "torch", "tokenizers", "pandas", "bertviz"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _own_version() -> str:
    """Installed: the package's version; run from the clone (not installed): pyproject.toml's."""
    try:
        return importlib.metadata.version("preln-explorer")
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text())["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def write_run_exports(
    trace: Trace, directory: str | Path, about: dict[str, Any], result: pd.DataFrame | None, stem: str,
    tables: Mapping[str, Table] | None = None,
) -> list[Path]:
    """A run's downloads in `directory`: `<stem>-trace.json` (`about`, software versions, and the tables: the task's
    `result` first, then trace_tables unless `tables` is given), `<stem>-about.csv` (field, value) and a CSV per
    table. `about` says what ran (task, model, input, settings, exported_at); its values should be JSON-ready."""
    about = {**about, "architecture": trace.architecture, "tokens": len(trace.tokens), "versions": software_versions()}
    tables = dict(trace_tables(trace) if tables is None else tables)
    if result is not None:
        tables = {"result": result, **tables}
    paths = write_tables(tables, directory, stem, about, json_name="trace")
    rows = [{"field": field, "value": value} for field, value in _flatten(about)]
    about_path = Path(directory) / f"{stem}-about.csv"
    pd.DataFrame(rows, columns=["field", "value"]).to_csv(about_path, index=False)
    return [paths[0], about_path, *paths[1:]]


def _flatten(value: Any, prefix: str = ""):
    """(dotted field, value) pairs of nested dicts: {"input": {"text": …}} -> ("input.text", …)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def write_exports(trace: Trace, directory: str | Path) -> list[Path]:
    """Write `<slug>-trace.json` (every table) and `<slug>-<table>.csv` into `directory`; return their paths."""
    about = {"model_name": trace.model_name, "architecture": trace.architecture}
    return write_tables(trace_tables(trace), directory, slug(trace.model_name), about, json_name="trace")


def write_tables(
    tables: Mapping[str, Table], directory: str | Path, prefix: str, about: dict, json_name: str
) -> list[Path]:
    """`<prefix>-<json_name>.json` holding `about` and every table as a list of rows, then `<prefix>-<table>.csv`
    per table. Missing values are empty in CSV; NaN, ±inf and <NA> are null in JSON, which has no such numbers."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # object dtype keeps rows of dicts as given: inferring dtypes would write a layer column holding None as 0.0, 1.0
    tables = {name: t if isinstance(t, pd.DataFrame) else pd.DataFrame(t, dtype=object) for name, t in tables.items()}
    json_path = directory / f"{prefix}-{json_name}.json"
    # to_dict gives Python scalars and None for <NA>; orjson writes NaN and ±inf as null, and is fast: the standard
    # library's indenting encoder is pure Python, ~20 ms of a large model's request here.
    document = {**about, "tables": {name: table.to_dict(orient="records") for name, table in tables.items()}}
    json_path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    paths = [json_path]
    for name, table in tables.items():
        path = directory / f"{prefix}-{name}.csv"
        table.to_csv(path, index=False)
        paths.append(path)
    return paths
