"""Memory per visitor of the served app: fresh browser visits, each a new session that opens the page.

    .venv/bin/python bench/bench_visits.py [--visits 50] [--env RPLN_MAX_SESSIONS=16] [--json OUT]

A visit is a new browser context (so a new Gradio session) that opens the page and waits until the charts of the
first tab's results on arrival are drawn, then closes. Every visit runs the page's load events, so the server
keeps that session's state (Gradio keeps a closed tab's for an hour, up to RPLN_MAX_SESSIONS sessions). The
server is `python app.py` on a free loopback port (bench_load.Server); its RSS is read after visits 1, 5, 10, 20,
… and the growth from visit 1 to the last is the figure the README reports. Needs Debian's chromium.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import Server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DRAWN = "document.querySelectorAll('.js-plotly-plot').length >= 3"  # the first tab's charts are on the page
SAMPLES = (1, 5, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200)


def visits(server: Server, count: int) -> dict:
    from playwright.sync_api import sync_playwright

    rss = {}
    start = time.perf_counter()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for i in range(1, count + 1):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(server.url, wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_function(DRAWN, timeout=120_000)
            time.sleep(1.0)  # let the other tabs' load events finish too
            context.close()
            if i in SAMPLES or i == count:
                rss[i] = round(server.rss_mb(), 1)
                print(f"after {i} visits: {rss[i]} MB", flush=True)
        browser.close()
    return {"visits": count, "rss_mb_after_visits": rss, "growth_mb_1_to_last": round(rss[count] - rss[1], 1),
            "wall_s": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=50)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server, e.g. RPLN_MAX_SESSIONS=16")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    server = Server(env=env)
    try:
        results = {"env": env, **visits(server, args.visits)}
    finally:
        server.stop()
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
