"""Where the app serves, which models it offers and how much it lets visitors use, from flags and environment."""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, field

from rpln_core.catalog import HUB_PRESETS, bundled_models
from rpln_core.errors import RplnError

from .pickers import TASKS, picker_choices

DEFAULT_MODELS = {
    "fill-mask": "preln-mini",
    "classification": "preln-mini-sentiment",
    "qa": "preln-mini-qa",
    "token-classification": "preln-mini-pos",
    "multiple-choice": "preln-mini-choice",
    "causal-lm": "preln-mini-causal",
    "compare-left": "preln-mini",
    "compare-right": "postln-mini",
}
# Without the bundled models, the comparison's right side falls back to the post-LN preset, not to a second
# pre-LN model: the tab is about the contrast.
FALLBACK_MODELS = {"compare-right": "FacebookAI/roberta-base"}

# Request budgets (rpln_core.budgets) and the environment variables that set them.
BUDGET_VARIABLES = {
    "RPLN_MAX_TEXT_CHARS": "max_text_chars",
    "RPLN_MAX_CONTEXT_CHARS": "max_context_chars",
    "RPLN_MAX_WINDOWS": "max_windows",
    "RPLN_MAX_TOP_K": "max_top_k",
    "RPLN_MAX_MASKS": "max_masks",
    "RPLN_MAX_NEW_TOKENS": "max_new_tokens",
    "RPLN_MAX_CHOICES": "max_choices",
}


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 7860
    # Public mode serves only `models`: no free Hub ids, no local paths (on by default on Spaces).
    public: bool = False
    models: list[str] = field(default_factory=list)  # the picker's choices, bundled first
    defaults: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    threads: int = 0  # 0: one per core
    # Weights of the loaded checkpoints kept in memory, the most recently used first (rpln_app.registry).
    model_memory_mb: int = 3072
    budgets: dict[str, int] = field(default_factory=dict)  # rpln_core.budgets changes; empty: the engine's own
    # One LRU memory budget for the traces of all visitors together (rpln_app.trace_store): a 12-layer, 768-wide
    # model's trace at 450 tokens is ~64 MB, a bundled model's ~0.2 MB.
    trace_memory_mb: int = 256
    # Gradio keeps every session's copy of the page's component values (every page visit is a session) until
    # this many newer sessions push it out; its default of 10,000 let memory grow by gigabytes. The trace store
    # keeps at most this many traces too. Each kept session costs the server about 2-3 MB of RSS (its values,
    # and the allocator's slack around them): with 40, 100 fresh API sessions grew RSS by 152 MB; with 16, fresh
    # browser visits level off at +51 MB after 30 (bench/bench_visits.py; the README's Reliability section).
    # An evicted visitor's views still show; re-drawing them asks for a new run.
    max_sessions: int = 16
    # The app takes no uploads, yet Gradio's upload route is open to anyone: keep what it accepts small.
    max_upload_mb: float = 1.0
    # Gradio's cache (model-view images, downloads) is swept every cache_every_s seconds of files older than
    # cache_age_s: disk holds at most that long of requests. An hour matches how long Gradio keeps a closed
    # tab's state, so a page left open loses its downloads no sooner than its state.
    cache_age_s: int = 3600
    cache_every_s: int = 300

    @property
    def cache_schedule(self) -> tuple[int, int]:
        """gr.Blocks(delete_cache=...): (how often, how old) in seconds."""
        return self.cache_every_s, self.cache_age_s

    @property
    def launch_options(self) -> dict:
        """The limits that Gradio takes only in launch(), however the app is started."""
        return {
            "max_file_size": int(self.max_upload_mb * 2**20),
            "state_session_capacity": self.max_sessions,
        }


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _whole(env: dict, name: str, default: int | None, low: int = 1) -> int | None:
    """The environment variable `name` as a whole number of at least `low`; `default` when unset."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise RplnError(f"{name} must be a whole number of at least {low}; got {text!r}.")
    return value


def from_environment(argv: list[str] | None = None, env: dict | None = None) -> Settings:
    """Settings from RPLN_* / GRADIO_SERVER_* variables, overridden by command-line flags."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(description="PreLN Explorer")
    parser.add_argument("--host", default=env.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument(
        "--models", default=env.get("RPLN_MODELS", ""), help="comma-separated names, directories or Hub ids"
    )
    parser.add_argument("--public", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--threads", type=int, default=int(env.get("RPLN_THREADS", "0")))
    args = parser.parse_args(argv if argv is not None else [])
    models = [m.strip() for m in args.models.split(",") if m.strip()] or bundled_models() + HUB_PRESETS
    public = args.public if args.public is not None else _flag(env.get("RPLN_PUBLIC"), "SPACE_ID" in env)
    defaults = dict(DEFAULT_MODELS)
    for task in defaults:
        chosen = env.get(f"RPLN_DEFAULT_{task.upper().replace('-', '_')}")
        if chosen:
            defaults[task] = chosen
        elif defaults[task] not in models:
            # A task tab starts on the first listed model with its head (one of unknown head if none is known).
            fitting = [name for _, name in picker_choices(models, task)] if task in TASKS else []
            fallback = FALLBACK_MODELS.get(task)
            defaults[task] = fitting[0] if fitting else fallback if fallback in models else models[0]
    budgets = {budget: _whole(env, name, None) for name, budget in BUDGET_VARIABLES.items()}
    base = Settings()
    upload_mb = env.get("RPLN_MAX_UPLOAD_MB", "").strip()
    try:
        max_upload_mb = float(upload_mb) if upload_mb else base.max_upload_mb
    except ValueError:
        max_upload_mb = -1.0
    if not max_upload_mb >= 0:  # also refuses nan
        raise RplnError(f"RPLN_MAX_UPLOAD_MB must be a number of megabytes, 0 or more; got {upload_mb!r}.")
    cache_minutes = _whole(env, "RPLN_CACHE_MINUTES", None)
    return Settings(
        host=args.host,
        port=args.port,
        public=public,
        models=models,
        defaults=defaults,
        threads=args.threads,
        budgets={budget: value for budget, value in budgets.items() if value is not None},
        trace_memory_mb=_whole(env, "RPLN_TRACE_MEMORY_MB", base.trace_memory_mb),
        model_memory_mb=_whole(env, "RPLN_MODEL_MEMORY_MB", base.model_memory_mb),
        max_sessions=_whole(env, "RPLN_MAX_SESSIONS", base.max_sessions),
        max_upload_mb=max_upload_mb,
        cache_age_s=base.cache_age_s if cache_minutes is None else cache_minutes * 60,
        cache_every_s=base.cache_every_s if cache_minutes is None else min(base.cache_every_s, cache_minutes * 15),
    )


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine (localhost, 127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or an interface address: other machines may reach it


def exposure_warning(settings: Settings) -> str | None:
    """What to tell the operator when the app serves other machines outside public mode; None when it does not."""
    if settings.public or is_loopback(settings.host):
        return None
    return (
        f"PreLN Explorer is serving {settings.host}:{settings.port} to other machines outside public mode: "
        "anyone who reaches it may load any Hub model into this server's memory and any checkpoint directory "
        "on its disk, and learn from the error messages which paths exist. Serve 127.0.0.1 for yourself, or "
        "turn public mode on (--public or RPLN_PUBLIC=1) to offer only the listed models."
    )
