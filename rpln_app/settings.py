"""Where the app serves and which models it offers, from CLI flags and environment variables."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from rpln_core.catalog import HUB_PRESETS, bundled_models

DEFAULT_MODELS = {
    "fill-mask": "preln-mini",
    "classification": "preln-mini-sentiment",
    "qa": "preln-mini-qa",
    "compare-left": "preln-mini",
    "compare-right": "postln-mini",
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
    cache_size: int = 4  # loaded checkpoints kept in memory: the three task models and the post-LN twin


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def from_environment(argv: list[str] | None = None) -> Settings:
    """Settings from RPLN_* / GRADIO_SERVER_* variables, overridden by command-line flags."""
    env = os.environ
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
            defaults[task] = models[0]
    return Settings(args.host, args.port, public, models, defaults, args.threads)
