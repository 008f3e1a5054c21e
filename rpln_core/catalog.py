"""Which models exist without downloading anything: the bundled ones and the Hub presets.

Kept free of torch and transformers so that the app can list models before those are imported.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"

# The eight public pre-LN checkpoints of Wettig et al. (2023), and the post-LN models to compare them with.
HUB_PRESETS = [f"andreasmadsen/efficient_mlm_m0.{p}" for p in ("15", "20", "30", "40", "50", "60", "70", "80")] + [
    "FacebookAI/roberta-base",
    "FacebookAI/roberta-large",
]


def bundled_models() -> list[str]:
    """Names of the models shipped under models/ (each a from_pretrained directory)."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "config.json").is_file())
