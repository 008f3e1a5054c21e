"""Fetch the JavaScript libraries that bertviz's views load (d3, jQuery, require.js) into viz/assets.

Run from the repository root:
    python scripts/fetch_view_assets.py [--check]

What to fetch is pinned in viz/assets/manifest.json: each library's npm version, the sha512 integrity of its
tarball and the sha256 of every file taken from it. Files whose sha256 already matches are left alone, so a
second run touches nothing and needs no network. Tarballs come through the npm client (`npm pack`), i.e. from
whatever registry npm is configured for; a tarball or file whose hash differs from the pin is refused.
`--check` only verifies the files on disk (exit 1 if one is missing or differs).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "viz" / "assets"
MANIFEST = ASSETS / "manifest.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stale_files(library: dict) -> list[dict]:
    """The library's files that are missing or whose sha256 differs from the pin."""
    return [f for f in library["files"] if not (ASSETS / f["to"]).is_file() or sha256(ASSETS / f["to"]) != f["sha256"]]


def npm_pack(spec: str, destination: Path) -> Path:
    """Download the tarball of `spec` (name@version) with the npm client; return its path."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("npm is needed to fetch the libraries (apt-get install -y npm).")
    done = subprocess.run(
        [npm, "pack", spec, "--json", "--pack-destination", str(destination)],
        capture_output=True, text=True, cwd=destination, check=False,
    )
    if done.returncode != 0:
        sys.exit(f"npm pack {spec} failed:\n{done.stderr.strip()}")
    return destination / json.loads(done.stdout)[0]["filename"]


def integrity(path: Path) -> str:
    """The tarball's Subresource-Integrity string, as npm's registry pins it."""
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch(library: dict, files: list[dict], scratch: Path) -> None:
    """Fetch `library`'s tarball, check it against the pin, and write `files` from it."""
    spec = f"{library['name']}@{library['version']}"
    unfetchable = [f["to"] for f in files if f["from"] is None]
    if unfetchable:
        sys.exit(f"{', '.join(unfetchable)} is not in the {spec} tarball: restore it from git (git checkout -- it).")
    tarball = npm_pack(spec, scratch)
    if integrity(tarball) != library["integrity"]:
        sys.exit(f"{spec}: the tarball's integrity {integrity(tarball)} differs from the pinned {library['integrity']}.")
    with tarfile.open(tarball) as archive:
        for file in files:
            data = archive.extractfile(file["from"]).read()
            if hashlib.sha256(data).hexdigest() != file["sha256"]:
                sys.exit(f"{spec}: {file['from']} does not have the pinned sha256 {file['sha256']}.")
            target = ASSETS / file["to"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            print(f"wrote {target.relative_to(ROOT)} ({len(data):,} bytes)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only verify the files on disk")
    args = parser.parse_args()
    libraries = json.loads(MANIFEST.read_text())["libraries"]
    stale = {library["name"]: stale_files(library) for library in libraries}
    if args.check or not any(stale.values()):
        for library in libraries:
            for file in stale[library["name"]]:
                print(f"{library['name']} {library['version']}: {file['to']} is missing or differs from its pin")
        if not any(stale.values()):
            print("all view assets match their pinned sha256")
        return 1 if any(stale.values()) else 0
    with tempfile.TemporaryDirectory() as scratch:
        for library in libraries:
            if stale[library["name"]]:
                fetch(library, stale[library["name"]], Path(scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
