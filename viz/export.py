"""The statistics of a trace as tables, and as files to download: one JSON with every table, one CSV per table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import orjson
import pandas as pd

from rpln_core import frames
from rpln_core.capture import Trace

from .layernorm import stats_table

Table = pd.DataFrame | list[dict]  # a frame, or rows of dicts (the experiments' tables), written as given


def trace_tables(trace: Trace) -> dict[str, pd.DataFrame]:
    """Tables keyed by name: "layers" (one row per layer), "layernorms" (per LayerNorm), "tokens" (per token)."""
    layernorms = pd.DataFrame(stats_table(trace)).astype({"layer": "Int64"})  # None outside the layers, not NaN
    return {"layers": frames.layers_frame(trace), "layernorms": layernorms, "tokens": token_table(trace)}


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
