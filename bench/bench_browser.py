"""How long the browser takes to draw the attention views, on the large case the issue names.

Run from the repository root (needs Debian's chromium and the dev requirements):
    .venv/bin/python bench/bench_browser.py [--repeats N] [--size large|small] [--json OUT]

The app serves one model ("large": random weights in the shape of andreasmadsen/efficient_mlm_m0.40, 24 layers x
16 heads, saved to a temporary directory; "small": the bundled preln-mini) and headless Chromium runs the fill-mask
tab at 128 tokens on one page, the text changing one word a run so every output changes. Inside the page, from
the click, a requestAnimationFrame loop waits until every chart of the visible views (the task chart, head view,
entropy, rollout, sinks) has been drawn by plotly after the click and the new model-view PNG has loaded.
The server times the tab handler of that same request; the rest of click-to-drawn is the queue, Gradio's
postprocessing, the transfer and the browser's rendering, which is what the target bounds. The handler is also
timed in-process with no browser running, since a browser drawing on the same cores can slow it. The page's first
request also loads the model and compiles plotly.js: it is printed, not counted. Medians over the other runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_app import free_port, save_random, serving, small_checkpoint, tab_settings  # noqa: E402
from bench.bench_core import format_table, quiet_torch, text_of_length, time_interleaved  # noqa: E402
from rpln_app.handlers import Handlers  # noqa: E402
from rpln_app.registry import ModelRegistry  # noqa: E402
from rpln_core.load import load_model  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKENS = 128
REPEATS = 5
PLOTS_SHOWN = 5  # the task chart, head view, entropy, rollout and sinks: what the open tabs show
TARGET_RENDER_S = 2.0
FIRST_WORDS = ("The", "A", "This", "That", "His", "Her", "Our", "Their", "One", "Each")

# Clicks Predict and resolves with {data, drawn} in ms after the click; the text differs from the last run's,
# so the table's rows change when the data arrives. Outputs already on the page are marked first, so only charts plotly draws after the click (a new chart, or an old one that fires
# plotly_afterplot again) and a model-view image with a new source count as drawn.
MEASURE_JS = """async ([plots]) => {
  const tab = [...document.querySelectorAll('.tabitem')].find(t => t.offsetParent !== null);
  const visiblePlots = () => [...tab.querySelectorAll('.js-plotly-plot')].filter(p => p.offsetParent !== null);
  const start = performance.now();
  visiblePlots().forEach(p => {
    p.dataset.stale = '1';
    if (p.on) p.on('plotly_afterplot', () => { p.dataset.drawnAt = String(performance.now()); });
  });
  const oldImages = new Set([...tab.querySelectorAll('img')].map(i => i.src));
  const rowText = () => [...tab.querySelectorAll('[role=row]')]
      .filter(r => !r.querySelector('[role=columnheader]')).map(r => r.textContent).join('|');
  const oldRows = rowText();
  const drawn = () => visiblePlots().filter(p => p.querySelector('.main-svg')
      && (!p.dataset.stale || Number(p.dataset.drawnAt || 0) > start)).length;
  const imageReady = () => [...tab.querySelectorAll('img')]
      .some(i => i.src && !oldImages.has(i.src) && i.complete && i.naturalWidth > 0);
  const button = [...tab.querySelectorAll('button')].find(b => b.textContent.trim() === 'Predict');
  button.click();
  return await new Promise(resolve => {
    let data = null;
    const tick = () => {
      const now = performance.now();
      if (data === null && rowText() && rowText() !== oldRows) data = now - start;
      if (data !== null && drawn() >= plots && imageReady()) { resolve({data, drawn: now - start}); return; }
      if (now - start > 300000) { resolve({data, drawn: null}); return; }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
}"""


def variants(text: str, tokenizer) -> list[str]:
    """`text` with its first word swapped for others that keep it exactly as many tokens long."""
    first, rest = text.split(" ", 1)
    swapped = [f"{word} {rest}" for word in (first, *FIRST_WORDS)]
    length = len(tokenizer(text)["input_ids"])
    return [t for t in dict.fromkeys(swapped) if len(tokenizer(t)["input_ids"]) == length]


def browser_runs(url: str, texts: list[str], repeats: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="domcontentloaded", timeout=120_000)
        page.get_by_role("button", name="Predict").wait_for(timeout=120_000)
        box = page.get_by_label("Text with one or more <mask>")
        runs = []
        # Run 0 is the first request of a fresh page: the model loads and plotly.js is fetched and compiled,
        # which a visitor pays once. Later runs change one word, so every output changes.
        for run in range(repeats + 1):
            box.fill(texts[run % len(texts)])
            timing = page.evaluate(MEASURE_JS, [PLOTS_SHOWN])
            if timing["drawn"] is None:
                raise RuntimeError(f"run {run}: the views did not all render within 300 s: {timing}")
            print(f"  run {run}: data after {timing['data']:.0f} ms, drawn after {timing['drawn']:.0f} ms"
                  + (" (first request of the page)" if run == 0 else ""), flush=True)
            runs.append(timing)
        browser.close()
    return runs[1:]


def timed(handler, times: list[float]):
    """`handler` (a Handlers method) that appends each call's duration in seconds to `times`."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return handler(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - start)

    return wrapper


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--size", choices=["large", "small"], default="large")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    quiet_torch(args.threads)
    import app

    with tempfile.TemporaryDirectory(prefix="rpln-bench-browser-") as directory:
        make = save_random if args.size == "large" else lambda size, d: small_checkpoint(d)
        model, description = make(args.size, Path(directory))
        print(f"{args.size}: {description}", flush=True)
        tokenizer = load_model(model).tokenizer
        texts = variants(text_of_length(tokenizer, TOKENS, mask=True), tokenizer)
        settings = tab_settings(model, free_port())
        # The server's own handler time for each request, so each run's rest is its click-to-drawn minus it.
        server_times: list[float] = []
        with mock.patch.object(Handlers, "fill_mask", timed(Handlers.fill_mask, server_times)):
            with serving(app, settings) as (_, url):
                runs = browser_runs(url, texts, args.repeats)
        for run, server in zip(runs, server_times[-len(runs):]):
            run["server"] = server * 1000
        handlers = Handlers(ModelRegistry([model], public=False))
        alone = statistics.median(time_interleaved({"tab": lambda: handlers.fill_mask(model, texts[0], 5)},
                                                   args.repeats)["tab"])
    drawn = statistics.median(r["drawn"] for r in runs) / 1000
    server = statistics.median(r["server"] for r in runs) / 1000
    rest = statistics.median(r["drawn"] - r["server"] for r in runs) / 1000
    print(f"\nBrowser, fill-mask tab at {TOKENS} tokens, {description} (median of {len(runs)} after the page's "
          "first request)")
    print(format_table(["step", "median s"], [
        ["click to every view drawn", f"{drawn:.2f}"],
        ["server time of the tab handler, in that request", f"{server:.2f}"],
        ["the rest: queue, postprocessing, transfer, rendering", f"{rest:.2f}"],
        ["the same handler in-process, no browser running", f"{alone:.2f}"],
    ]))
    met = rest < TARGET_RENDER_S
    print(f"transfer and render = {rest:.2f} s (target < {TARGET_RENDER_S:g} s: {'met' if met else 'MISSED'})")
    if args.json:
        report = {"size": args.size, "model": description, "tokens": TOKENS, "browser_runs_ms": runs,
                  "server_median_s": server, "rest_median_s": rest, "handler_alone_median_s": alone,
                  "drawn_median_s": drawn}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
