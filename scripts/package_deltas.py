"""Ship finished head runs as bundled deltas: models/<name>/{delta.json, delta.safetensors}, with their curves and
evaluations, after checking that each rebuilds over the bundled base and that models/ stays within its budget.

Run from the repository root:
`python -m scripts.package_deltas --model preln-mini-pos=runs/head-pos --extra runs/head-pos-full`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Sequence

from rpln_core import deltas
from rpln_core.catalog import BUNDLED_DIR
from rpln_core.errors import RplnError

LIMIT_MIB = 60.0
MIB = 2**20


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / MIB


def copy_records(run: Path, dest: Path) -> None:
    """<run>/train_log.csv -> curves/<run>.csv and <run>/eval.json -> eval/<run>.json."""
    for source, folder, suffix in ((run / "train_log.csv", "curves", ".csv"), (run / "eval.json", "eval", ".json")):
        if not source.is_file():
            raise RplnError(f"{source} not found: did the run {run} finish?")
        (dest / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / folder / f"{run.name}{suffix}")


def package(models: dict[str, Path], extra_runs: Sequence[Path], dest: Path) -> list[str]:
    """Copy each run's delta to dest/<name> and check it rebuilds; returns lines to print."""
    lines = []
    for name, run in models.items():
        target = dest / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for file in (deltas.MANIFEST, deltas.WEIGHTS):
            shutil.copy2(run / "delta" / file, target / file)
            (target / file).chmod(0o644)  # safetensors writes 0600; a shipped file is for every reader
        model = deltas.build_model(target)  # checks both hashes over the bundled base
        lines.append(f"{name:24s} {folder_mib(target):6.2f} MiB  {type(model).__name__}")
        copy_records(run, dest)
    for run in extra_runs:
        copy_records(run, dest)
    total = folder_mib(dest)
    lines.append(f"total {dest}: {total:.2f} MiB (limit {LIMIT_MIB:.0f} MiB)")
    if total > LIMIT_MIB:
        raise RplnError(f"{dest} holds {total:.2f} MiB, over the {LIMIT_MIB:.0f} MiB budget")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=RUN")
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="runs whose curve and eval ship alone")
    parser.add_argument("--dest", type=Path, default=BUNDLED_DIR)
    args = parser.parse_args(argv)
    try:
        models = {}
        for pair in args.model:
            name, sep, run = pair.partition("=")
            if not sep or not name or not run:
                raise RplnError(f"--model takes NAME=RUN, got {pair!r}")
            models[name] = Path(run)
        print("\n".join(package(models, args.extra, args.dest)))
    except RplnError as error:
        print(f"package_deltas: {error.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
