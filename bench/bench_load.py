"""Load, soak and fault suite for the served app: does a public Space survive its visitors?

Run from the repository root (only ever against 127.0.0.1; every loop is bounded in count and time):
    .venv/bin/python bench/bench_load.py [--quick] [--json bench/results-load.json]

Each phase runs against `python app.py` started as a subprocess on a free loopback port, in default mode (so the
direct run route and local paths are open: the hardest case for the engine), with the bundled models:
- concurrency: 8 clients × 25 mixed requests (fill_mask of 16–400 tokens, classify, answer, compare) through the
  queue with gradio_client, then the same through `POST /gradio_api/run/<name>` (no queue), then with a cancel
  storm (half the requests cancelled after 0–50 ms). Every answer is compared with the answer the same input got
  when sent alone, before the load: a mismatch is a wrong result.
- soak: 400 sequential requests, the server's RSS every 25.
- sessions: 200 fresh sessions (a new client each) running the fill-mask tab once: RSS after 1 and after 200.
- budgets: a 500,000-character QA context and top_k=10**9: time to the answer, and the peak RSS added.
- faults: the server stopped (SIGSTOP) for 5 s mid-request, clients gone mid-request, corrupt and Git-LFS-pointer
  weights, and an app copy without its models/ folder.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradio_client import Client  # noqa: E402

SERVER_START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 120.0
PHASE_TIMEOUT_S = 600.0  # no phase may run longer, whatever the machine
FILL_MASK_TOKENS = (16, 64, 128, 256, 400)
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
MB = 2**20


@dataclass(frozen=True)
class Request:
    api_name: str  # a gr.api endpoint: fill_mask, classify, answer, compare
    kwargs: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        return self.api_name


@dataclass
class Outcome:
    ok: bool
    value: Any  # the endpoint's JSON result, or the error text
    seconds: float


@dataclass
class PhaseResult:
    name: str
    requests: int
    failures: int  # errors where the input alone got an answer (or any transport error)
    mismatches: int  # answers that differ from the same input's answer alone
    cancelled: int = 0
    wall_s: float = 0.0
    p50_s: float | None = None
    p95_s: float | None = None
    throughput_per_s: float | None = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- the server


class Server:
    """`python app.py` on a free loopback port, with its RSS readable from /proc."""

    def __init__(self, args: list[str] = (), cwd: Path = ROOT, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        environment = {**os.environ, **(env or {})}
        environment.pop("SYSTEM", None)  # "spaces" would put the direct route behind the queue
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(self.port), *args],
            cwd=cwd, env=environment, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not answers_200(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers_200(url: str) -> bool:
    try:
        with OPENER.open(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def client_for(server: Server, timeout_s: float | None = None) -> Client:
    """A gradio_client Client; `timeout_s` replaces httpx's default 5 s read timeout (a pause longer than that
    makes the default client give up with ReadTimeout while the server goes on)."""
    extra = {"httpx_kwargs": {"timeout": timeout_s}} if timeout_s else {}
    return Client(server.url, verbose=False, download_files=False, analytics_enabled=False, **extra)


# ---------------------------------------------------------------- requests


def fill_mask_text(tokenizer, tokens: int) -> str:
    """A text of about `tokens` tokens whose mask comes early, inside what the bundled models read (128)."""
    sentence = " The weather was fine and the people walked along the river to the old town."
    text = f"The <mask> spoke to the people about the economy.{sentence * (tokens // 16 + 1)}"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: tokens - 2]
    return tokenizer.decode(ids)


def mixed_requests(tokenizer) -> list[Request]:
    """The distinct inputs of the concurrency phases: every endpoint, fill-mask from 16 to 400 tokens."""
    context = ("harp: a chordal stringed instrument. violin: bowed stringed instrument that is the highest member "
               "of the violin family. drum: a musical percussion instrument. ") * 6
    requests = [Request("fill_mask", (("text", fill_mask_text(tokenizer, n)), ("model", "preln-mini"), ("top_k", 5)))
                for n in FILL_MASK_TOKENS]
    requests += [
        Request("classify", (("text", "A gripping, beautifully acted and deeply moving film."),
                             ("model", "preln-mini-sentiment"))),
        Request("classify", (("text", "A dull, lifeless mess that wastes its cast."), ("model", "preln-mini-sentiment"))),
        Request("answer", (("question", "What is a violin?"), ("context", context), ("model", "preln-mini-qa"),
                           ("top_k", 3))),
        Request("compare", (("text", "In the beginning God created the heaven and the <mask>."),
                            ("left", "preln-mini"), ("right", "postln-mini"), ("top_k", 5))),
    ]
    return requests


def via_queue(client: Client, request: Request) -> Outcome:
    start = time.perf_counter()
    try:
        value = client.predict(**dict(request.kwargs), api_name=f"/{request.api_name}")
        return Outcome(True, value, time.perf_counter() - start)
    except Exception as error:  # noqa: BLE001 - any failure is a result to count
        return Outcome(False, f"{type(error).__name__}: {error}", time.perf_counter() - start)


def via_direct_route(server: Server, order: dict[str, list[str]], request: Request) -> Outcome:
    """POST /gradio_api/run/<name>: Gradio answers it without the queue (unless SYSTEM=spaces)."""
    given = dict(request.kwargs)
    data = [given.get(name) for name in order[request.api_name]]
    body = json.dumps({"data": data}).encode()
    http = urllib.request.Request(f"{server.url}gradio_api/run/{request.api_name}", body,
                                  {"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with OPENER.open(http, timeout=REQUEST_TIMEOUT_S) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        answer = {"error": f"HTTP {error.code}: {error.read()[:300]!r}"}
    except (urllib.error.URLError, OSError) as error:
        answer = {"error": f"{type(error).__name__}: {error}"}
    seconds = time.perf_counter() - start
    if "data" in answer:
        return Outcome(True, answer["data"][0], seconds)
    return Outcome(False, str(answer.get("error")), seconds)


def parameter_order(client: Client) -> dict[str, list[str]]:
    """Each endpoint's parameter names in order, as the server describes them."""
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    return {name.lstrip("/"): [p["parameter_name"] for p in spec["parameters"]] for name, spec in info.items()}


def same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def judge(name: str, outcomes: list[tuple[Request, Outcome]], alone: dict[Request, Outcome],
          wall_s: float, cancelled: int = 0) -> PhaseResult:
    """Count failures and wrong answers against what each input got alone."""
    failures = mismatches = 0
    notes: list[str] = []
    for request, outcome in outcomes:
        reference = alone[request]
        if outcome.ok != reference.ok:
            failures += 1
            if len(notes) < 5:
                notes.append(f"{request.label}: {str(outcome.value)[:200]}")
        elif outcome.ok and not same(outcome.value, reference.value):
            mismatches += 1
    times = sorted(outcome.seconds for _, outcome in outcomes)
    return PhaseResult(
        name, len(outcomes), failures, mismatches, cancelled, round(wall_s, 2),
        round(statistics.median(times), 3) if times else None,
        round(times[int(0.95 * (len(times) - 1))], 3) if times else None,
        round(len(outcomes) / wall_s, 2) if wall_s else None, notes,
    )


def concurrently(clients: int, per_client: int, requests: list[Request], send: Callable[[int, Request], Outcome],
                 seed: int) -> tuple[list[tuple[Request, Outcome]], float]:
    """`clients` threads, each sending `per_client` requests drawn from `requests`."""
    def one_client(index: int) -> list[tuple[Request, Outcome]]:
        rng = random.Random(seed + index)
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        done = []
        for _ in range(per_client):
            if time.monotonic() > deadline:
                break
            request = rng.choice(requests)
            done.append((request, send(index, request)))
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [pair for part in pool.map(one_client, range(clients)) for pair in part]
    return results, time.perf_counter() - start


def cancel_storm(server: Server, clients: int, per_client: int, requests: list[Request],
                 alone: dict[Request, Outcome], seed: int) -> PhaseResult:
    """Half the requests are cancelled 0–50 ms after they were sent; the other half must still be right."""
    cancelled = 0
    lock = threading.Lock()

    def one_client(index: int) -> list[tuple[Request, Outcome]]:
        nonlocal cancelled
        rng = random.Random(seed + index)
        client = client_for(server)
        done = []
        for _ in range(per_client):
            request = rng.choice(requests)
            start = time.perf_counter()
            job = client.submit(**dict(request.kwargs), api_name=f"/{request.api_name}")
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0, 0.05))
                job.cancel()
                with lock:
                    cancelled += 1
                continue
            try:
                done.append((request, Outcome(True, job.result(timeout=REQUEST_TIMEOUT_S), time.perf_counter() - start)))
            except Exception as error:  # noqa: BLE001
                done.append((request, Outcome(False, f"{type(error).__name__}: {error}", time.perf_counter() - start)))
        client.close()
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = [pair for part in pool.map(one_client, range(clients)) for pair in part]
    return judge("cancel storm (queue)", outcomes, alone, time.perf_counter() - start, cancelled)


# ---------------------------------------------------------------- soak, sessions, budgets


def soak(server: Server, requests: list[Request], alone: dict[Request, Outcome], count: int) -> dict:
    client = client_for(server)
    rss = [(0, round(server.rss_mb(), 1))]
    outcomes = []
    start = time.perf_counter()
    for i in range(count):
        request = requests[i % len(requests)]
        outcomes.append((request, via_queue(client, request)))
        if (i + 1) % 25 == 0:
            rss.append((i + 1, round(server.rss_mb(), 1)))
    client.close()
    result = judge(f"{count} sequential requests", outcomes, alone, time.perf_counter() - start)
    return {"phase": asdict(result), "rss_mb_by_request": rss}


def fresh_sessions(server: Server, count: int, tokenizer) -> dict:
    """Each session is a new client (a new session hash) that runs the fill-mask tab, as a visitor would."""
    text = fill_mask_text(tokenizer, 64)
    rss = {}
    failures = 0
    start = time.perf_counter()
    for i in range(count):
        client = client_for(server)
        try:
            client.predict("preln-mini", text, 5, api_name="/ui_fill_mask")
        except Exception:  # noqa: BLE001
            failures += 1
        client.close()
        if i + 1 in (1, 10, 50, 100, 200, count):
            rss[i + 1] = round(server.rss_mb(), 1)
    return {"sessions": count, "failures": failures, "rss_mb_after_sessions": rss,
            "growth_mb_1_to_last": round(rss[count] - rss[1], 1), "wall_s": round(time.perf_counter() - start, 1)}


def peak_rss_during(server: Server, fn: Callable[[], Outcome]) -> tuple[Outcome, float]:
    """Run `fn` while sampling the server's RSS every 5 ms; return its outcome and the peak added (MiB)."""
    before = server.rss_mb()
    peak = before
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, server.rss_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        outcome = fn()
    finally:
        stop.set()
        sampler.join()
    return outcome, peak - before


def budget_cases(server: Server) -> list[dict]:
    client = client_for(server)
    cases = {
        "QA context of 500,000 characters": Request("answer", (("question", "What is a violin?"),
                                                               ("context", "violin: a bowed instrument. " * 17_858),
                                                               ("model", "preln-mini-qa"), ("top_k", 1))),
        "fill_mask with top_k=10**9": Request("fill_mask", (("text", "The <mask> sat."), ("model", "preln-mini"),
                                                            ("top_k", 10**9))),
        "compare with top_k=10**9": Request("compare", (("text", "The <mask> sat."), ("top_k", 10**9))),
    }
    rows = []
    for name, request in cases.items():
        outcome, added = peak_rss_during(server, lambda: via_queue(client, request))
        rows.append({"case": name, "refused": not outcome.ok, "message": str(outcome.value)[:300],
                     "seconds": round(outcome.seconds, 3), "peak_rss_added_mb": round(added, 1)})
    client.close()
    return rows


# ---------------------------------------------------------------- faults


def stopped_mid_request(server: Server, request: Request, alone: dict[Request, Outcome]) -> dict:
    client = client_for(server, timeout_s=REQUEST_TIMEOUT_S)
    start = time.perf_counter()
    job = client.submit(**dict(request.kwargs), api_name=f"/{request.api_name}")
    time.sleep(0.02)
    os.kill(server.process.pid, signal.SIGSTOP)
    time.sleep(5)
    os.kill(server.process.pid, signal.SIGCONT)
    try:
        value, ok = job.result(timeout=REQUEST_TIMEOUT_S), True
    except Exception as error:  # noqa: BLE001
        value, ok = f"{type(error).__name__}: {error}", False
    after = via_queue(client, request)
    client.close()
    return {"fault": "server stopped 5 s mid-request (SIGSTOP/SIGCONT)", "answered": ok,
            "error": None if ok else str(value)[:300],
            "correct": ok and same(value, alone[request].value), "seconds": round(time.perf_counter() - start, 2),
            "next_request_correct": after.ok and same(after.value, alone[request].value)}


def clients_gone(server: Server, request: Request, alone: dict[Request, Outcome], count: int) -> dict:
    """Start `count` requests through the event API and drop each connection before the answer comes."""
    rss_before = server.rss_mb()
    body = json.dumps({"data": [dict(request.kwargs).get("text"), "preln-mini", 5]}).encode()
    for _ in range(count):
        post = urllib.request.Request(f"{server.url}gradio_api/call/{request.api_name}", body,
                                      {"Content-Type": "application/json"})
        with OPENER.open(post, timeout=10) as response:
            event_id = json.loads(response.read())["event_id"]
        stream = OPENER.open(f"{server.url}gradio_api/call/{request.api_name}/{event_id}", timeout=10)
        stream.close()  # gone before the answer
    client = client_for(server)
    after = via_queue(client, request)
    client.close()
    return {"fault": f"{count} clients gone mid-request", "next_request_correct":
            after.ok and same(after.value, alone[request].value), "rss_added_mb": round(server.rss_mb() - rss_before, 1)}


def broken_weights(server: Server) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for kind in ("corrupt", "Git LFS pointer"):
            folder = Path(scratch) / kind.replace(" ", "-")
            shutil.copytree(ROOT / "models" / "preln-mini", folder)
            weights = folder / "model.safetensors"
            if kind == "corrupt":
                weights.write_bytes(weights.read_bytes()[:1000] + os.urandom(1000))
            else:
                weights.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 1\n")
            client = client_for(server)
            request = Request("fill_mask", (("text", "The <mask> sat."), ("model", str(folder)), ("top_k", 5)))
            first, again = via_queue(client, request), via_queue(client, request)
            client.close()
            rows.append({"fault": f"{kind} weights", "refused": not first.ok, "message": str(first.value)[:300],
                         "first_s": round(first.seconds, 3), "again_s": round(again.seconds, 3),
                         "server_alive": server.process.poll() is None})
    return rows


def missing_models_folder() -> dict:
    """An app copy without models/: does the page open, and what does a request say?"""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "app"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "models", "__pycache__", "bench"))
        start = time.perf_counter()
        try:
            server = Server(cwd=copy)
        except RuntimeError as error:
            return {"fault": "no models/ folder", "page_opens": False, "message": str(error)[-500:]}
        started = time.perf_counter() - start
        try:
            client = client_for(server)
            outcome = via_queue(client, Request("fill_mask", (("text", "The <mask> sat."),)))
            client.close()
            return {"fault": "no models/ folder", "page_opens": True, "startup_s": round(started, 1),
                    "request_refused": not outcome.ok, "message": str(outcome.value)[:300]}
        finally:
            server.stop()


# ---------------------------------------------------------------- main


def sessions_only(tokenizer, count: int, json_path: Path | None) -> None:
    """The fresh-sessions phase on its own, after the warm-up a full run's earlier phases would have given."""
    server = Server()
    try:
        client = client_for(server)
        for _ in range(30):
            client.predict("preln-mini", fill_mask_text(tokenizer, 64), 5, api_name="/ui_fill_mask")
        client.close()
        results = {"sessions": fresh_sessions(server, count, tokenizer)}
    finally:
        server.stop()
    print(json.dumps(results, indent=1))
    if json_path:
        json_path.write_text(json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and sessions, for a smoke run")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--sessions-only", action="store_true",
                        help="only the fresh-sessions phase, after 30 warm-up requests (about 5 minutes)")
    args = parser.parse_args(argv)
    clients, per_client = 8, (5 if args.quick else 25)
    soak_count, sessions = (50, 20) if args.quick else (400, 200)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ROOT / "models" / "preln-mini")
    if args.sessions_only:
        return sessions_only(tokenizer, sessions, args.json)
    requests = mixed_requests(tokenizer)
    server = Server()
    results: dict[str, Any] = {"quick": args.quick, "cpu_count": os.cpu_count()}
    try:
        client = client_for(server)
        results["rss_mb_at_start"] = round(server.rss_mb(), 1)
        alone = {request: via_queue(client, request) for request in requests}  # each input sent alone
        results["alone_failures"] = [r.label for r, o in alone.items() if not o.ok]
        order = parameter_order(client)
        client.close()

        clients_by_index = [client_for(server) for _ in range(clients)]
        outcomes, wall = concurrently(clients, per_client, requests,
                                      lambda i, r: via_queue(clients_by_index[i], r), seed=1)
        phases = [judge(f"{clients} clients × {per_client} (queue)", outcomes, alone, wall)]
        outcomes, wall = concurrently(clients, per_client, requests,
                                      lambda i, r: via_direct_route(server, order, r), seed=2)
        phases.append(judge(f"{clients} clients × {per_client} (direct run route)", outcomes, alone, wall))
        for c in clients_by_index:
            c.close()
        phases.append(cancel_storm(server, clients, per_client, requests, alone, seed=3))
        results["concurrency"] = [asdict(phase) for phase in phases]
        results["soak"] = soak(server, requests, alone, soak_count)
        results["sessions"] = fresh_sessions(server, sessions, tokenizer)
        results["budgets"] = budget_cases(server)
        results["faults"] = [stopped_mid_request(server, requests[3], alone),
                             clients_gone(server, requests[0], alone, 10 if args.quick else 20),
                             *broken_weights(server)]
        results["rss_mb_at_end"] = round(server.rss_mb(), 1)
    finally:
        server.stop()
    results["faults"].append(missing_models_folder())
    print(json.dumps(results, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
