"""The statistics of a trace as tables, and as files to download: one JSON with every table, one CSV per table."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import orjson

from rpln_core import analysis
from rpln_core.capture import Trace

from .layernorm import stats_table


def trace_tables(trace: Trace) -> dict[str, list[dict]]:
    """Tables keyed by name: "layers" (one row per layer), "layernorms" (per LayerNorm), "tokens" (per token)."""
    return {"layers": analysis.summary_table(trace), "layernorms": stats_table(trace), "tokens": token_table(trace)}


def token_table(trace: Trace) -> list[dict]:
    """One row per token: where it sits in the text, whether it is special, and its residual norm after each layer."""
    tokens = trace.tokens
    embed_norm = trace.resid_pre_norm[0].float().tolist()
    post_norm = trace.resid_post_norm.float().T.tolist()  # [tokens, layers]
    rows = []
    for index, (text, (start, end), special) in enumerate(zip(tokens.strings, tokens.offsets, tokens.special)):
        row = {"index": index, "string": text, "start": start, "end": end, "special": special}
        row["segment"] = tokens.segments[index]
        row["embed_norm"] = embed_norm[index]
        row.update({f"resid_post_norm[{layer}]": norm for layer, norm in enumerate(post_norm[index])})
        rows.append(row)
    return rows


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe version of `text`: ASCII letters, digits and single dashes, never empty."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "trace"


def write_exports(trace: Trace, directory: str | Path) -> list[Path]:
    """Write `<slug>-trace.json` (every table) and `<slug>-<table>.csv` into `directory`; return their paths."""
    about = {"model_name": trace.model_name, "architecture": trace.architecture}
    return write_tables(trace_tables(trace), directory, slug(trace.model_name), about, json_name="trace")


def write_tables(
    tables: dict[str, list[dict]], directory: str | Path, prefix: str, about: dict, json_name: str
) -> list[Path]:
    """`<prefix>-<json_name>.json` holding `about` and every table, then `<prefix>-<table>.csv` per table."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tables = {table: [clean(row) for row in rows] for table, rows in tables.items()}
    json_path = directory / f"{prefix}-{json_name}.json"
    document = {**about, "tables": tables}
    # orjson: the standard library's indenting encoder is pure Python, ~20 ms of a large model's request here.
    json_path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    paths = [json_path]
    for table, rows in tables.items():
        path = directory / f"{prefix}-{table}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            writer.writerows(rows)
        paths.append(path)
    return paths


def clean(row: dict) -> dict:
    """The row with NaN and ±inf as None: strict JSON has no such numbers (a median of 0 gives an inf ratio)."""
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in row.items()}
