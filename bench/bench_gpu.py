"""The engine on a CUDA GPU: the capture's latency next to a plain forward and the fill-mask pipeline.

Run from the repository root on a machine with a CUDA GPU (CI has none; the numbers in the README come from a
lent H100):
    python bench/bench_gpu.py [--repeats N] [--json OUT]

First a check that a GPU pass gives what a CPU pass gives: the bundled preln-mini's fill-mask top 5 and residual
norms, computed on each device. Then the large shape (random weights in the shape of
andreasmadsen/efficient_mlm_m0.40) on the GPU in float32 at 16, 128 and 512 tokens: a plain sdpa forward, the
pipeline on the GPU, and fill_mask with the full capture (eager attention, the trace copied back to the CPU).
Every timed call ends with torch.cuda.synchronize(); medians after one warm-up, the cases taking turns.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import pipeline  # noqa: E402

from bench.bench_core import attention, build_mlm, format_table, quiet_torch, text_of_length, time_interleaved  # noqa: E402
from rpln_core import fill_mask  # noqa: E402
from rpln_core.load import load_model  # noqa: E402

LENGTHS = (16, 128, 512)
REPEATS = 10
CHECK_TEXT = "In the beginning God created the heaven and the <mask>."


def synced(fn):
    def run():
        result = fn()
        torch.cuda.synchronize()
        return result

    return run


def same_on_both_devices() -> dict:
    """preln-mini's fill-mask and residual norms on the CPU and on the GPU."""
    results = {}
    for device in ("cpu", "cuda"):
        result = fill_mask(load_model("preln-mini", device=device), CHECK_TEXT)
        results[device] = ([p.token_str for p in result.predictions[0]], result.trace.resid_post_norm.float())
    (cpu_top, cpu_norms), (gpu_top, gpu_norms) = results["cpu"], results["cuda"]
    return {
        "top5_cpu": cpu_top,
        "top5_gpu": gpu_top,
        "same_top5": cpu_top == gpu_top,
        "max_relative_norm_difference": float(((gpu_norms - cpu_norms).abs() / cpu_norms).max()),
        "trace_device": str(result.trace.attentions.device),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device visible")
    quiet_torch(4)
    check = same_on_both_devices()
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}\ncheck: {check}", flush=True)

    loaded, description = build_mlm("large")
    loaded.model.to("cuda")
    fill = pipeline("fill-mask", model=loaded.model, tokenizer=loaded.tokenizer, device=0)
    rows = []
    for tokens in LENGTHS:
        text = text_of_length(loaded.tokenizer, tokens, mask=True)
        inputs = loaded.tokenizer(text, return_tensors="pt").to("cuda")

        def plain():
            with attention(loaded, "sdpa"), torch.no_grad():
                return loaded.model(**inputs)

        def pipe():
            with attention(loaded, "sdpa"):
                return fill(text)

        cases = {"plain": synced(plain), "pipeline": synced(pipe), "fill_mask": synced(lambda: fill_mask(loaded, text))}
        for mode, runs in time_interleaved(cases, args.repeats).items():
            rows.append({"tokens": tokens, "mode": mode, "median_ms": statistics.median(runs) * 1000, "runs_s": runs})
            print(f"  {tokens:4} tokens  {mode:9} {rows[-1]['median_ms']:8.1f} ms", flush=True)
    median = {(r["tokens"], r["mode"]): r["median_ms"] for r in rows}
    body = [
        [t, f"{median[(t, 'plain')]:.1f}", f"{median[(t, 'pipeline')]:.1f}", f"{median[(t, 'fill_mask')]:.1f}",
         f"{median[(t, 'fill_mask')] / median[(t, 'pipeline')]:.2f}x"]
        for t in LENGTHS
    ]  # fmt: skip
    print(f"\n{description}, float32 on {torch.cuda.get_device_name()}")
    print(format_table(["tokens", "plain ms", "pipeline ms", "fill_mask ms", "fill_mask / pipeline"], body))
    if args.json:
        report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "model": description,
                  "check": check, "rows": rows}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
