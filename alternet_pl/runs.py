"""Run directories: `runs/<experiment>/<version>/`, never overwritten, agreed on by every rank."""

from __future__ import annotations

import os
import re
from pathlib import Path

from alternet_pl.errors import InputError

RUN_DIR_ENV = "ALTERNET_RUN_DIR"


def global_rank_from_env() -> int:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def next_version(parent: Path) -> str:
    taken = [
        int(m.group(1)) for p in parent.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))
    ]
    return f"version_{max(taken, default=-1) + 1}"


def _make_parent(parent: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"cannot create the run folder {parent} ({err.strerror}); pass --runs_dir=<a writable folder>"
        ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"the run folder {parent} is not writable; pass --runs_dir=<a writable folder>")


def has_results(run_dir: str | os.PathLike) -> bool:
    """Whether a run directory holds any logged metric row or analysis result to draw."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.csv"
    if metrics.is_file() and len(metrics.read_text().splitlines()) > 1:
        return True
    return any(p for p in run_dir.glob("analysis/*/*.json") if not p.name.endswith(".error.json"))


def job_version() -> str | None:
    """`job_<id>` under SLURM / torchrun (the same on every rank and after a requeue), else None."""
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
    return f"job_{job}" if job and job != "none" else None


def make_run_dir(
    runs_root: str | os.PathLike, experiment: str, version: str | None = None, reuse: bool = False
) -> Path:
    """Create (rank 0) or look up (other ranks) this run's directory.

    Lightning's DDP launcher starts the other ranks from this process, so they inherit
    ALTERNET_RUN_DIR; SLURM / torchrun ranks start alone and name the version after the job id.
    An existing directory is never reused (a new version is made instead) unless `reuse` (a resumed
    run goes on in its own directory). Raises `InputError` when the folder cannot be written.
    """
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    parent = Path(runs_root) / experiment
    version = version or job_version()
    rank = global_rank_from_env()
    if rank == 0 and reuse and version is not None and (parent / version).is_dir():
        run_dir = parent / version
    elif rank == 0:
        _make_parent(parent)
        if version is None or (parent / version).exists():
            base = version
            version = next_version(parent) if base is None else f"{base}_{next_version(parent)}"
        run_dir = parent / version
        run_dir.mkdir(parents=False, exist_ok=False)
    else:
        if version is None:
            raise RuntimeError(
                f"rank {rank} cannot agree on a run directory: set {RUN_DIR_ENV} or launch through "
                "Lightning / SLURM / torchrun"
            )
        run_dir = parent / version
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir
