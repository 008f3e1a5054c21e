"""Size and draw time of bertviz's head, model and neuron views as viz/bertviz_views.py builds them, against
bertviz's own HTML for the same input in the same run.

Run from the repository root (needs bertviz, Debian's chromium and the dev requirements):
    .venv/bin/python bench/bench_bertviz.py [--tokens 128] [--repeats 3] [--json bench/results-bertviz.json]

The model has random weights in the shape of andreasmadsen/efficient_mlm_m0.40 (24 layers × 16 heads, hidden 1024,
head_dim 64; bench_core.build_mlm("large")); the input is exactly `--tokens` tokens. The trace keeps attention,
queries and keys in float32, as `model(..., output_attentions=True)` gives them to bertviz.

For each view: our page's size, the time to build it, and in headless Chromium with every non-local request
aborted, the time from navigation to the first frame painted after bertviz's JavaScript drew (an init script polls
with requestAnimationFrame for the first SVG element, then waits one more frame; it also notes when our script has
unpacked the numbers). Medians over `--repeats` runs, each in a fresh page.

bertviz's own, same input: its head_view / model_view HTML (html_action="return") for the same layers and heads,
drawn once with its CDN <script> swapped for our inlined libraries (as it is, it draws nothing offline). head_view
has no option for heads, so it is given the attention of our page's heads only; its default, every head, is
measured and drawn too (all_heads). For the model view also its default, all 24 × 16 heads (size only: 6.3 million
SVG lines would draw for minutes). Its neuron view needs bertviz's forked model classes, so its size is that of the
params JSON its show() would embed for this input, computed with bertviz's own layout (full precision, sliced per
filter), for our page's layers and for every layer (which is what show() always embeds).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.bench_core import build_mlm, format_table, machine, quiet_torch, text_of_length  # noqa: E402
from rpln_core import CaptureOptions, fill_mask  # noqa: E402
from viz import bertviz_views as bv  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TARGET_BYTES = 5 * 2**20
TARGET_DRAWN_S = 2.0
# Runs in the page before any of its scripts (through the DevTools protocol, so the page's CSP does not apply).
PROBE = """
window.__bench = {drawn: null, unpacked: null};
let view;
Object.defineProperty(window, "rplnBertvizView", {configurable: true, get: () => view,
  set: f => { view = p => { window.__bench.unpacked = performance.now(); return f(p); }; }});
(function poll() {
  if (document.querySelector("#vis svg line, #vis svg rect")) {
    requestAnimationFrame(() => { window.__bench.drawn = performance.now(); });
  } else requestAnimationFrame(poll);
})();
"""


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def draw(browser, path: Path, timeout_s: float) -> dict:
    """Open `path` offline in a fresh page; seconds from navigation to drawn (None past `timeout_s`)."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    left = []
    page.route("**/*", lambda route: route.continue_() if urlsplit(route.request.url).scheme in ("file", "data", "about")
               else (left.append(route.request.url), route.abort()))
    page.add_init_script(PROBE)
    try:
        page.goto(path.as_uri(), wait_until="commit", timeout=timeout_s * 1000)
        deadline = time.monotonic() + timeout_s
        while page.evaluate("window.__bench.drawn") is None:
            if time.monotonic() > deadline:
                return {"drawn_s": None, "note": f"not drawn within {timeout_s:.0f} s"}
            time.sleep(0.05)
        found = page.evaluate("window.__bench")
        lines = page.evaluate("document.querySelectorAll('#vis svg line').length")
        return {
            "drawn_s": found["drawn"] / 1000,
            "unpacked_s": found["unpacked"] / 1000 if found["unpacked"] is not None else None,
            "svg_lines": lines,
            "requests_aborted": left,
        }
    finally:
        page.close()


def ours(trace, view: str, repeats: int, browser, directory: Path) -> dict:
    builder = bv.VIEWS[view]
    build_s, page = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        page = builder(trace)
        build_s.append(time.perf_counter() - start)
    path = directory / f"ours-{view}.html"
    path.write_text(page, encoding="utf-8")
    draws = [draw(browser, path, timeout_s=120) for _ in range(repeats)]
    data = json.loads(re.search(r'id="rpln-bertviz-data">(.*?)</script>', page, re.S)[1])
    params = data["params"]
    heads = params.get("include_heads") or list(range(trace.num_heads))
    return {
        "bytes": len(page.encode()),
        "build_s": median(build_s),
        "build_runs_s": build_s,
        "drawn_s": median([d["drawn_s"] for d in draws]),
        "drawn_runs_s": [d["drawn_s"] for d in draws],
        "unpacked_s": median([d.get("unpacked_s") for d in draws]),
        "svg_lines": draws[-1].get("svg_lines"),
        "requests_aborted": sorted({u for d in draws for u in d.get("requests_aborted", [])}),
        "layers": data.get("layer_labels") or params.get("include_layers"),
        "heads": heads,
        "heads_included": len(heads),
    }


def offline_copy(bertviz_html: str) -> str:
    """bertviz's page with its CDN require.js swapped for our inlined libraries, so that it can draw offline."""
    libraries = "".join(f"<script>{bv._library_source(lib.path)}</script>" for lib in bv.libraries())
    page = re.sub(r'<script src="https?://[^"]*"></script>', lambda _: libraries + f"<script>{bv._DEFINE}</script>",
                  bertviz_html, count=1)
    return f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{page}</body></html>'


def bertviz_own(trace, view: str, mine: dict, browser, directory: Path, draw_timeout_s: float) -> dict:
    from bertviz import head_view, model_view

    attention = tuple(layer[None] for layer in trace.attentions.float())  # [1, heads, tokens, tokens] per layer
    tokens, b_start = trace.tokens.strings, bv._sentence_b_start(trace)
    result: dict = {}
    if view == "neuron":
        start = time.perf_counter()
        result["bytes"] = len(bertviz_neuron_params(trace, mine["layers"]).encode())
        result["build_s"] = time.perf_counter() - start
        result["layers"] = mine["layers"]
        result["all_layers"] = {"bytes": len(bertviz_neuron_params(trace).encode())}
        result["note"] = "size of the params JSON its show() embeds for these layers (it always embeds all: all_layers); "
        result["note"] += "it needs its own model classes to run, so it is not drawn"
        return result
    if view == "head":
        chosen = tuple(layer[:, mine["heads"]] for layer in attention)  # head_view has no option for heads
        build = lambda: head_view(  # noqa: E731
            chosen, tokens, sentence_b_start=b_start, include_layers=mine["layers"], html_action="return").data
        start = time.perf_counter()
        everything = head_view(attention, tokens, sentence_b_start=b_start, html_action="return").data
        result["all_heads"] = {"bytes": len(everything.encode()), "build_s": time.perf_counter() - start}
        path = directory / "bertviz-head-all.html"
        path.write_text(offline_copy(everything), encoding="utf-8")
        del everything
        result["all_heads"].update(draw(browser, path, timeout_s=draw_timeout_s))
    else:
        build = lambda: model_view(  # noqa: E731
            attention, tokens, sentence_b_start=b_start, include_layers=mine["layers"],
            include_heads=mine["heads"], html_action="return").data
        start = time.perf_counter()
        everything = model_view(attention, tokens, sentence_b_start=b_start, html_action="return").data
        result["all_layers_and_heads"] = {"bytes": len(everything.encode()), "build_s": time.perf_counter() - start}
        del everything
    start = time.perf_counter()
    page = build()
    result["build_s"] = time.perf_counter() - start
    result["bytes"] = len(page.encode())
    result["layers"], result["heads"] = mine["layers"], mine["heads"]
    path = directory / f"bertviz-{view}.html"
    path.write_text(offline_copy(page), encoding="utf-8")
    del page
    result.update(draw(browser, path, timeout_s=draw_timeout_s))
    result["note"] = "drawn with its CDN require.js swapped for inlined libraries: as shipped it draws nothing offline"
    return result


def bertviz_neuron_params(trace, layers: list[int] | None = None) -> str:
    """json.dumps of the params bertviz's neuron_view.show embeds for this input, laid out as its get_attention
    lays them out: per filter, attention [layers][heads][rows][cols] and queries/keys [layers][heads][tokens][d]."""
    chosen = slice(None) if layers is None else layers
    attention, queries, keys = (t[chosen].float() for t in (trace.attentions, trace.queries, trace.keys))
    n, b = len(trace.tokens), bv._sentence_b_start(trace)
    a_part, b_part = slice(0, b or n), slice(b or n, n)
    cuts = {"all": (slice(0, n), slice(0, n))}
    if b is not None:
        cuts.update(aa=(a_part, a_part), bb=(b_part, b_part), ab=(a_part, b_part), ba=(b_part, a_part))
    attn = {
        name: {
            "attn": attention[:, :, rows, cols].tolist(),
            "left_text": trace.tokens.strings[rows],
            "right_text": trace.tokens.strings[cols],
            "queries": queries[:, :, rows].tolist(),
            "keys": keys[:, :, cols].tolist(),
        }
        for name, (rows, cols) in cuts.items()
    }
    params = {"attention": attn, "default_filter": "all", "root_div_id": "bertviz-0", "bidirectional": True,
              "display_mode": "dark", "layer": None, "head": None}
    return "window.bertviz_params = %s" % json.dumps(params)


def ratios(mine: dict, theirs: dict) -> dict:
    """How many times larger and slower to draw bertviz's page is than ours."""
    drawn = theirs.get("drawn_s")
    return {"bytes_ratio": theirs["bytes"] / mine["bytes"],
            "drawn_ratio": drawn / mine["drawn_s"] if drawn and mine["drawn_s"] else None}


def table(results: dict) -> str:
    rows = []
    for view, row in results.items():
        mine, theirs = row["ours"], row["bertviz"]
        rows.append([
            view,
            f"{mine['bytes'] / 2**20:.2f} MB",
            f"{mine['build_s']:.2f} s",
            f"{mine['drawn_s']:.2f} s" if mine["drawn_s"] is not None else "—",
            f"{mine['unpacked_s']:.2f} s" if mine["unpacked_s"] is not None else "—",
            f"{theirs['bytes'] / 2**20:.1f} MB",
            f"{theirs['drawn_s']:.2f} s" if theirs.get("drawn_s") is not None else "—",
            f"{row['bytes_ratio']:.0f}×",
        ])
    header = ["view", "ours", "build", "drawn", "unpacked", "bertviz", "bertviz drawn", "bertviz / ours"]
    return format_table(header, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="input length, special tokens included")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement of our views")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--bertviz-timeout", type=float, default=300, help="seconds to wait for bertviz's own draw")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results-bertviz.json", help="write results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from playwright.sync_api import sync_playwright

    args = parse_args(argv)
    load_at_start = machine()["load_average"]  # other jobs on the two cores slow the draws: see the end's too
    quiet_torch(args.threads)
    mlm, description = build_mlm("large")
    text = text_of_length(mlm.tokenizer, args.tokens, mask=True)
    options = CaptureOptions(queries_and_keys=True, attention_dtype=torch.float32, attention_budget_bytes=None)
    trace = fill_mask(mlm, text, options=options).trace
    assert len(trace.tokens) == args.tokens and trace.queries is not None
    print(f"{description}; {args.tokens} tokens", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        for view in ("head", "model", "neuron"):
            mine = ours(trace, view, args.repeats, browser, Path(scratch))
            theirs = bertviz_own(trace, view, mine, browser, Path(scratch), args.bertviz_timeout)
            results[view] = {
                "ours": mine,
                "bertviz": theirs,
                **ratios(mine, theirs),
                "under_5_mb": mine["bytes"] <= TARGET_BYTES,
                "drawn_under_2_s": mine["drawn_s"] is not None and mine["drawn_s"] < TARGET_DRAWN_S,
            }
            if "all_heads" in theirs:
                results[view]["all_heads"] = ratios(mine, theirs["all_heads"])
            print(f"{view}: ours {mine['bytes'] / 2**20:.2f} MB, {len(mine['layers'])} layers × "
                  f"{mine['heads_included']} heads, drawn in {mine['drawn_s']:.2f} s; "
                  f"bertviz {theirs['bytes'] / 2**20:.1f} MB for the same layers and heads", flush=True)
        browser.close()
    print(table(results))
    report = {
        "model": description,
        "tokens": args.tokens,
        "repeats": args.repeats,
        "machine": {**machine(), "load_average_at_start": load_at_start},
        "chromium": CHROMIUM,
        "views": results,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json}")


if __name__ == "__main__":
    main()
