"""Fill a folder with the GPU benchmark's pure-Python dependencies, unpacked, for `PYTHONPATH=DIR`.

    python -m benchmarks.prepare DIR        (`benchmarks/gpu.sh --prepare DIR`; needs the network)

The GPU machine has its own Python 3.12, torch, Lightning and timm, no internet, and no PyHessian,
hessian-eigenthings or jsonargparse. This downloads, on a machine with the network, the wheels of
PyHessian, hessian-eigenthings, jsonargparse (with its `signatures` extra's docstring-parser and
typeshed-client) and timm at the version this checkout is tested with, for Python 3.12, without
their dependencies, refuses any wheel that is not pure Python (`py3-none-any`), unpacks each into DIR
(its .dist-info included, so `importlib.metadata` sees the version) and writes DIR/MANIFEST.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


class PrepareError(RuntimeError):
    """The folder cannot be prepared; the message says why (exit status 2 for bad input, 3 otherwise)."""

    status = 3


class BadTarget(PrepareError):
    status = 2


__all__ = ["requirements", "prepare", "main", "PrepareError"]

# distribution -> the version pinned when this checkout does not have it installed
PINS = {
    "PyHessian": "0.1",
    "hessian-eigenthings": "1.0.0a5",
    "jsonargparse": "4.53.0",
    "docstring-parser": "0.18.0",
    "typeshed-client": "2.15.0",
    "timm": "1.0.31",
}


def requirements() -> list[str]:
    """`name==version` of each package: the version installed here (what the tests ran) or the pin."""
    out = []
    for dist, pin in PINS.items():
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = pin
        out.append(f"{dist}=={version}")
    return out


def prepare(target: Path, python_version: str = "3.12") -> list[Path]:
    """Download the pure-Python wheels for `python_version` and unpack them into `target` (created;
    must be empty or hold an earlier preparation). Returns the wheels' names as unpacked.

    Raises BadTarget for a target that is a non-empty folder of something else, PrepareError when
    pip fails (no network, no such version) or a wheel is not pure Python; the target is untouched."""
    if target.exists() and any(target.iterdir()) and not (target / "MANIFEST.txt").is_file():
        raise BadTarget(f"{target} is a non-empty folder without MANIFEST.txt; pass a new or empty folder")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            python_version,
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            *requirements(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            raise PrepareError(f"pip download failed (is the network reachable?): {tail[0]}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        impure = [w.name for w in wheels if not w.name.endswith("-py3-none-any.whl")]
        if impure:
            raise PrepareError(f"not pure-Python wheels, which the GPU machine may not load: {impure}")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        lines = []
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(target)
            lines.append(f"{wheel.name} sha256={hashlib.sha256(wheel.read_bytes()).hexdigest()}")
        (target / "MANIFEST.txt").write_text(
            f"pure-Python wheels for Python {python_version}, unpacked: use PYTHONPATH={target}\n"
            + "\n".join(lines)
            + "\n"
        )
        return [Path(w.name) for w in wheels]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", type=Path, help="folder to fill (created)")
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    args = ap.parse_args(argv)
    try:
        wheels = prepare(args.target, args.python_version)
    except PrepareError as err:  # one line, no traceback: torch-free, so not alternet_pl's run_command
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.status) from None
    for wheel in wheels:
        print(f"unpacked {wheel}")
    print(f"ready: PYTHONPATH={args.target.resolve()}")


if __name__ == "__main__":
    main()
