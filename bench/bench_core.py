"""Latency and memory of the engine's captured tasks against a plain forward and pipeline("fill-mask").

Run from the repository root:
    .venv/bin/python bench/bench_core.py [--quick] [--threads N] [--json OUT]

Two models: "small" (the bundled preln-mini, else a random model of its size) and "large" (random
weights in the shape of andreasmadsen/efficient_mlm_m0.40). Every ratio compares numbers measured
in the same run, so a busy machine shifts both sides alike. Memory is probed in fresh subprocesses
(one per model, length and mode) so that one measurement's allocator state cannot leak into another.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the engine is a plain package at the repository root, not installed

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import pipeline  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from rpln_core import answer, classify, fill_mask  # noqa: E402
from rpln_core.load import LoadedModel  # noqa: E402
from rpln_core import synthetic  # noqa: E402

BUNDLED_SMALL = "preln-mini"
# The bundled preln-mini's shape, with random weights and RoBERTa's 514 positions: preln-mini itself reads
# only 128 tokens, and the engine's overhead is what this script measures, at up to 512.
SMALL_SHAPE = dict(
    vocab_size=8192,
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=1024,
    max_position_embeddings=514,
)
LENGTHS = (16, 128, 512)
QUICK_LENGTHS = (16, 128)
REPEATS = {"small": 7, "large": 3}
QUICK_REPEATS = 2
MEMORY_REQUESTS = 3
SAMPLE_INTERVAL_S = 0.001
QUESTION = "Who wrote the letter?"
MEMORY_MODES = ("plain", "fill_mask")
MIB = 2**20
# After the warm-up, glibc would serve a request from memory the previous one freed (its mmap threshold
# grows to 32 MiB as big blocks are freed), so RSS would not move and a request would look free. A fixed
# threshold makes every tensor above it a mapping of its own, returned to the system when freed: RSS then
# follows the live tensors.
PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024), "MALLOC_TRIM_THRESHOLD_": str(128 * 1024)}


@dataclass
class LatencyRow:
    model: str  # "small" or "large"
    tokens: int  # exact input length, special tokens included
    mode: str  # "plain", "eager" (plain with eager attention), "pipeline", "fill_mask", "classify" or "answer"
    median_s: float
    runs_s: list[float]  # every timed run, after one warm-up


@dataclass
class MemoryRow:
    model: str
    tokens: int
    mode: str  # "plain" (sdpa forward, no capture) or "fill_mask" (with full capture)
    added_mib: float  # median over requests of sampled peak RSS minus RSS before the request
    added_mib_runs: list[float]
    hwm_added_mib: float  # the same from the kernel's VmHWM (reset per request): catches peaks the sampler misses
    kept_mib: float  # median RSS right after the request, its result still alive, minus before: what the result holds
    before_mib: float  # RSS before the last request: model weights plus whatever the allocator kept


@dataclass
class Bench:
    """The models of one benchmark size: one encoder shared by three heads, and how they were made."""

    size: str
    description: str
    mlm: LoadedModel
    classifier: LoadedModel
    qa: LoadedModel


# ---------------------------------------------------------------- models


def build_mlm(size: str) -> tuple[LoadedModel, str]:
    """The masked-LM model of `size` with eager attention, and a line saying what it is."""
    shape = SMALL_SHAPE if size == "small" else synthetic.EFFICIENT_MLM_LARGE
    with quiet_stdout():  # the BPE trainer prints empty progress lines when stdout is no terminal
        tokenizer = synthetic.build_tokenizer()
    # build_config sets type_vocab_size itself (RoBERTa's 1), so it must not come twice.
    config = synthetic.build_config("pre-ln", **{k: v for k, v in shape.items() if k != "type_vocab_size"})
    model = synthetic.build_model("pre-ln", "mlm", config, seed=0)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    what = "efficient_mlm_m0.40 shape" if size == "large" else f"{BUNDLED_SMALL} shape, 514 positions"
    description = (
        f"random weights, {what}: {shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, "
        f"{shape['num_attention_heads']} heads, vocab {shape['vocab_size']}, {params:.0f}M params"
    )
    return LoadedModel(f"bench-{size}", "local", "pre-ln", "mlm", model, tokenizer), description


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1 itself: the Rust tokenizer trainer writes past sys.stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def with_head(mlm: LoadedModel, task: str) -> LoadedModel:
    """A `task` model whose encoder IS the MLM model's encoder: one copy of the weights for all heads."""
    head_model = synthetic.build_model("pre-ln", task, mlm.config, seed=1)  # same config object: same attention switch
    prefix = head_model.base_model_prefix
    setattr(head_model, prefix, getattr(mlm.model, prefix))
    gc.collect()  # the head model's own freshly built encoder is garbage now
    return LoadedModel(mlm.name, "local", "pre-ln", task, head_model, mlm.tokenizer)


def build_bench(size: str) -> Bench:
    mlm, description = build_mlm(size)
    return Bench(size, description, mlm, with_head(mlm, "classification"), with_head(mlm, "qa"))


@contextlib.contextmanager
def attention(loaded: LoadedModel, implementation: str) -> Iterator[None]:
    """Run the shared encoder with `implementation` inside the block; capture needs eager outside it."""
    loaded.model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        loaded.model.set_attn_implementation("eager")


# ---------------------------------------------------------------- inputs of exact length


def token_count(tokenizer, text: str, text_pair: str | None = None) -> int:
    return len(tokenizer(text, text_pair)["input_ids"])


def text_of_length(tokenizer, target: int, *, mask: bool, question: str | None = None) -> str:
    """Sample words, with one mask in the middle if `mask`, that tokenize to exactly `target` tokens.

    With `question`, the length counted is that of the (question, text) pair, as QA encodes it.
    """
    words = [word for sentence in synthetic.SAMPLE_TEXT for word in sentence.split()]
    filler = next(w for w in words if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1)

    def render(chosen: list[str]) -> str:
        if mask:
            middle = len(chosen) // 2
            chosen = chosen[:middle] + [tokenizer.mask_token] + chosen[middle:]
        return " ".join(chosen)

    def length(chosen: list[str]) -> int:
        return token_count(tokenizer, question, render(chosen)) if question else token_count(tokenizer, render(chosen))

    chosen: list[str] = []
    for word in itertools.cycle(words):  # whole words while they fit, then one-token words to close the gap
        if length(chosen + [word]) > target:
            break
        chosen.append(word)
    while length(chosen) < target:
        chosen.append(filler)
    if length(chosen) != target:
        raise RuntimeError(f"Could not build an input of exactly {target} tokens (got {length(chosen)}).")
    return render(chosen)


# ---------------------------------------------------------------- latency


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_interleaved(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each case, after one untimed warm-up each.

    The cases take turns (one run of each per round), so a burst of load from another process
    slows every case of that round alike instead of one case's whole series: ratios stay fair.
    """
    for fn in cases.values():
        fn()
    runs: dict[str, list[float]] = {mode: [] for mode in cases}
    for _ in range(repeats):
        for mode, fn in cases.items():
            runs[mode].append(seconds(fn))
            gc.collect()
    return runs


def plain_forward(loaded: LoadedModel, text: str, implementation: str = "sdpa") -> Callable[[], object]:
    """The MLM model's own forward with sdpa attention and no capture: the floor for every task.

    With implementation="eager" it shows what eager attention alone costs, apart from the hooks.

    Like the pipeline's, it computes full-vocabulary logits at every position, which at 512 tokens on
    the large model are ~100 MiB of what this request adds; fill_mask scores the masked position only.
    """
    inputs = loaded.tokenizer(text, return_tensors="pt")

    def run():
        with attention(loaded, implementation), torch.no_grad():
            return loaded.model(**inputs)

    return run


def fill_mask_pipeline(loaded: LoadedModel) -> Callable[[str], object]:
    """transformers' own fill-mask pipeline on the same weights, running sdpa as it would by default."""
    fill = pipeline("fill-mask", model=loaded.model, tokenizer=loaded.tokenizer, device="cpu")

    def run(text: str):
        with attention(loaded, "sdpa"):
            return fill(text)

    return run


def latency_cases(bench: Bench, tokens: int, pipe: Callable[[str], object]) -> dict[str, Callable[[], object]]:
    """Every timed mode at `tokens`, each a call on inputs built once beforehand."""
    tokenizer = bench.mlm.tokenizer
    masked = text_of_length(tokenizer, tokens, mask=True)
    single = text_of_length(tokenizer, tokens, mask=False)
    context = text_of_length(tokenizer, tokens, mask=False, question=QUESTION)
    # The whole input in one window: with the default max_seq_len of 384, 512 tokens would be read as
    # two overlapping windows plus a traced one, and the row would no longer compare with one forward.
    qa_window = max(tokens, 384)
    return {
        "plain": plain_forward(bench.mlm, masked),
        "eager": plain_forward(bench.mlm, masked, "eager"),
        "pipeline": lambda: pipe(masked),
        "fill_mask": lambda: fill_mask(bench.mlm, masked),
        "classify": lambda: classify(bench.classifier, single),
        "answer": lambda: answer(bench.qa, QUESTION, context, max_seq_len=qa_window),
    }


def measure_latency(bench: Bench, lengths: tuple[int, ...], repeats: int) -> list[LatencyRow]:
    pipe = fill_mask_pipeline(bench.mlm)
    rows = []
    for tokens in lengths:
        for mode, runs in time_interleaved(latency_cases(bench, tokens, pipe), repeats).items():
            rows.append(LatencyRow(bench.size, tokens, mode, statistics.median(runs), runs))
            print(f"  {bench.size:5} {tokens:4} tokens  {mode:9} {rows[-1].median_s * 1000:10.1f} ms", flush=True)
    return rows


# ---------------------------------------------------------------- memory


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark VmHWM to the current RSS (Linux ≥ 4.0); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


class PeakSampler:
    """Polls RSS from a background thread while the block runs; `.peak` is the largest value seen."""

    def __init__(self, interval: float = SAMPLE_INTERVAL_S):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakSampler":
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def memory_request(mlm: LoadedModel, tokens: int, mode: str) -> Callable[[], object]:
    masked = text_of_length(mlm.tokenizer, tokens, mask=True)
    if mode == "plain":
        return plain_forward(mlm, masked)
    return lambda: fill_mask(mlm, masked)


def memory_probe(size: str, tokens: int, mode: str) -> MemoryRow:
    """In this process: build the model, warm up once, then the added peak RSS of each request."""
    mlm, _ = build_mlm(size)  # only MLM requests are probed: no heads needed
    request = memory_request(mlm, tokens, mode)
    request()
    added, hwm_added, kept = [], [], []
    for _ in range(MEMORY_REQUESTS):
        gc.collect()
        before = rss_bytes()
        has_hwm = reset_peak_rss()
        with PeakSampler() as sampler:
            result = request()
        hwm = peak_rss_bytes() if has_hwm else 0
        kept.append((rss_bytes() - before) / MIB)
        del result  # the trace lives until here: it is part of what one request costs
        added.append((sampler.peak - before) / MIB)
        hwm_added.append((hwm - before) / MIB if has_hwm else float("nan"))
    return MemoryRow(
        size,
        tokens,
        mode,
        statistics.median(added),
        added,
        statistics.median(hwm_added),
        statistics.median(kept),
        before / MIB,
    )


def spawn_memory_probe(size: str, tokens: int, mode: str, threads: int) -> MemoryRow:
    """Run `memory_probe` in a fresh interpreter so each probe starts from a clean heap."""
    command = [
        sys.executable, __file__, "--memory-probe", size, str(tokens), mode, "--threads", str(threads),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=os.environ | PROBE_ENV)
    if done.returncode != 0:
        raise RuntimeError(f"Memory probe {size}/{tokens}/{mode} failed:\n{done.stderr[-2000:]}")
    return MemoryRow(**json.loads(done.stdout.strip().splitlines()[-1]))


def measure_memory(plan: list[tuple[str, int]], threads: int) -> list[MemoryRow]:
    rows = []
    for size, tokens in plan:
        for mode in MEMORY_MODES:
            rows.append(spawn_memory_probe(size, tokens, mode, threads))
            print(f"  {size:5} {tokens:4} tokens  {mode:9} +{rows[-1].added_mib:8.1f} MiB", flush=True)
    return rows


# ---------------------------------------------------------------- report


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Plain-text columns: first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def latency_table(rows: list[LatencyRow]) -> str:
    lookup = {(r.model, r.tokens, r.mode): r.median_s for r in rows}
    body = []
    for r in rows:
        plain = lookup[(r.model, r.tokens, "plain")]
        vs_pipeline = r.median_s / lookup[(r.model, r.tokens, "pipeline")] if r.mode == "fill_mask" else None
        body.append(
            [
                r.model,
                r.tokens,
                r.mode,
                f"{r.median_s * 1000:.1f}",
                len(r.runs_s),
                "" if r.mode == "plain" else f"{r.median_s / plain:.2f}x",
                f"{vs_pipeline:.2f}x" if vs_pipeline is not None else "",
            ]
        )
    return format_table(["model", "tokens", "mode", "median ms", "runs", "/ plain", "/ pipeline"], body)


def memory_table(rows: list[MemoryRow]) -> str:
    lookup = {(r.model, r.tokens, r.mode): r.added_mib for r in rows}
    body = []
    for r in rows:
        plain = lookup.get((r.model, r.tokens, "plain"))
        ratio = f"{r.added_mib / plain:.2f}x" if r.mode != "plain" and plain else ""
        body.append(
            [
                r.model,
                r.tokens,
                r.mode,
                f"{r.added_mib:.1f}",
                f"{r.hwm_added_mib:.1f}",
                f"{r.kept_mib:.1f}",
                f"{r.before_mib:.0f}",
                ratio,
            ]
        )
    header = [
        "model", "tokens", "mode", "added MiB", "added (VmHWM)", "kept by result", "RSS before", "capture / plain",
    ]  # fmt: skip
    return format_table(header, body)


def targets(latency: list[LatencyRow], memory: list[MemoryRow]) -> list[str]:
    """The issue's two targets, where this run measured them."""
    lat = {(r.model, r.tokens, r.mode): r.median_s for r in latency}
    mem = {(r.model, r.tokens, r.mode): r.added_mib for r in memory}

    def verdict(what: str, ratio: float, limit: float) -> str:
        return f"{what} = {ratio:.2f}x (target ≤ {limit}x: {'met' if ratio <= limit else 'MISSED'})"

    lines = []
    for size in ("small", "large"):
        if (size, 128, "fill_mask") in lat:
            ratio = lat[(size, 128, "fill_mask")] / lat[(size, 128, "pipeline")]
            lines.append(verdict(f"{size}: fill_mask with capture / pipeline at 128 tokens", ratio, 1.25))
    if ("large", 512, "fill_mask") in mem:
        ratio = mem[("large", 512, "fill_mask")] / mem[("large", 512, "plain")]
        lines.append(verdict("large: memory added per request at 512 tokens, capture / plain", ratio, 2))
    return lines


def load_line(threads: int) -> str:
    """The load average at the end of a run, and whether other processes shared the CPUs (more load than threads)."""
    load = os.getloadavg()[0]
    shared = "other processes shared the CPUs" if load > threads else "no more than this run's threads"
    return f"load average at the end: {load:.2f} ({shared}: {threads} threads)"


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPEATS} runs, lengths {QUICK_LENGTHS} only")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--skip-memory", action="store_true", help="latency only")
    parser.add_argument("--memory-probe", nargs=3, metavar=("SIZE", "TOKENS", "MODE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def memory_plan(lengths: tuple[int, ...]) -> list[tuple[str, int]]:
    """Small at every length; large only at the longest, where the memory target is set (and a probe costs most)."""
    return [("small", n) for n in lengths] + [("large", max(lengths))]


def quiet_torch(threads: int) -> int:
    """Set torch's thread count (never above the cores) and silence transformers; returns the count used."""
    threads = max(1, min(threads, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return threads


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threads = quiet_torch(args.threads)

    if args.memory_probe:
        size, tokens, mode = args.memory_probe
        print(json.dumps(asdict(memory_probe(size, int(tokens), mode))))
        return

    lengths = QUICK_LENGTHS if args.quick else LENGTHS
    info = machine()
    print(
        f"machine: {info['cpu_count']} CPUs, torch {info['torch']}, transformers {info['transformers']}, "
        f"{threads} threads, load average {info['load_average'][0]:.2f}",
        flush=True,
    )
    latency: list[LatencyRow] = []
    models = {}
    for size in ("small", "large"):
        started = time.perf_counter()
        bench = build_bench(size)
        models[size] = bench.description
        print(f"{size}: {bench.description} (built in {time.perf_counter() - started:.1f} s)", flush=True)
        repeats = QUICK_REPEATS if args.quick else REPEATS[size]
        latency += measure_latency(bench, lengths, repeats)
        del bench
        gc.collect()

    print("memory probes (fresh process each):", flush=True)
    memory = [] if args.skip_memory else measure_memory(memory_plan(lengths), threads)

    print()
    for size, description in models.items():
        print(f"{size}: {description}")
    print(f"\nLatency (median of runs after 1 warm-up; ratios from this run)\n{latency_table(latency)}")
    if memory:
        print(f"\nPeak memory added per request (median of {MEMORY_REQUESTS}, RSS sampled every "
              f"{SAMPLE_INTERVAL_S * 1000:.0f} ms)\n{memory_table(memory)}")
    print()
    for line in targets(latency, memory):
        print(line)
    print(load_line(threads))
    if args.json:
        report = {
            "machine": info,
            "models": models,
            "latency": [asdict(r) for r in latency],
            "memory": [asdict(r) for r in memory],
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
