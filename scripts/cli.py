"""What the training scripts' command lines share: a flag per field of their config dataclass."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any


def add_config_flags(parser: argparse.ArgumentParser, defaults: Any, *, skip: set[str] = frozenset(),
                     kinds: dict[str, type] | None = None) -> None:
    """A `--field-name` flag for each field of the dataclass instance `defaults` but those in `skip`, its default
    the field's value. `kinds`: the type of the fields whose default does not tell it (None, a path given as str)."""
    kinds = kinds or {}
    for item in fields(defaults):
        if item.name in skip:
            continue
        value = getattr(defaults, item.name)
        parser.add_argument(f"--{item.name.replace('_', '-')}", type=kinds.get(item.name, type(value)), default=value)
