"""The teaching tab's performance targets: the comparison on the bundled twins, and the experiment at initialisation.

Run from the repository root:
    .venv/bin/python bench/bench_teaching.py [--repeats N] [--threads N] [--json OUT]

- Comparison: the tab's handler (`TeachingHandlers.compare`: both passes, diagrams, figures, downloads), which is
  the function the server runs for the event, next to the core call `rpln_core.compare.compare` alone, at exactly
  64 tokens with one mask, on preln-mini and postln-mini. Target: under 1 s server time.
- Experiment at initialisation: `TeachingHandlers.init_experiment` at 12 layers x 256 wide (with its depth sweep
  3/6/12/24 and figures), from cold caches each run, and again with the results cached (a user moving nothing
  else). Target: under 5 s.
- Outlier dimensions: `TeachingHandlers.ablation` on the twins and the same text, with 3 random controls (each model
  runs 5 passes: intact, outliers off, 3 controls). No target of its own; reported beside the comparison.
Calls take turns, so a busy machine slows every case alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the app and the engine are plain packages at the repository root, not installed

from bench.bench_core import format_table, machine, quiet_torch, text_of_length, time_interleaved  # noqa: E402
from rpln_app.registry import ModelRegistry  # noqa: E402
from rpln_app.teaching import TeachingHandlers  # noqa: E402
from rpln_core import init_report  # noqa: E402
from rpln_core.compare import compare  # noqa: E402

TWINS = ("preln-mini", "postln-mini")
TOKENS = 64
INIT = dict(depth=12, width=256, init_std=None, seed=0)
REPEATS = 5
TARGETS = {"compare handler": 1.0, "init experiment, cold": 5.0}


@dataclass
class Row:
    case: str
    median_s: float
    runs_s: list[float]


def clear_init_caches() -> None:
    """Forget every fresh model's numbers, so the experiment runs from scratch."""
    init_report._gradients.cache_clear()
    init_report._residual_norms.cache_clear()


def measure(repeats: int) -> list[Row]:
    handlers = TeachingHandlers(ModelRegistry(list(TWINS), public=False))
    left, right = (handlers.registry.get(name) for name in TWINS)
    text = text_of_length(left.tokenizer, TOKENS, mask=True)

    def init_cold():
        clear_init_caches()
        return handlers.init_experiment(**INIT)

    cases = {
        "compare handler": lambda: handlers.compare(*TWINS, text, 5),
        "core compare": lambda: compare(left, right, text, top_k=5),
        "outlier dimensions handler": lambda: handlers.ablation(*TWINS, text, 3, 0),
        "init experiment, cold": init_cold,
        "init experiment, cached": lambda: handlers.init_experiment(**INIT),
    }
    return [Row(case, statistics.median(runs), runs) for case, runs in time_interleaved(cases, repeats).items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    threads = quiet_torch(args.threads)
    info = machine()
    print(f"machine: {info['cpu_count']} CPUs, torch {info['torch']}, {threads} threads, "
          f"load average {info['load_average'][0]:.2f}", flush=True)
    rows = measure(args.repeats)
    core = next(r.median_s for r in rows if r.case == "core compare")
    body = [[r.case, f"{r.median_s * 1000:.1f}", len(r.runs_s)] for r in rows]
    print(f"\nTeaching tab, {TOKENS} tokens on {' and '.join(TWINS)}; init at "
          f"{INIT['depth']} layers x {INIT['width']} (median after 1 warm-up)")
    print(format_table(["case", "median ms", "runs"], body))
    print(f"compare handler / core compare: {next(r.median_s for r in rows if r.case == 'compare handler') / core:.2f}x")
    for row in rows:
        if row.case in TARGETS:
            met = row.median_s < TARGETS[row.case]
            print(f"{row.case} = {row.median_s:.2f} s (target < {TARGETS[row.case]:g} s: {'met' if met else 'MISSED'})")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": [asdict(r) for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
