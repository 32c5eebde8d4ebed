"""Run directories: `runs/<experiment>/<version>/`, never overwritten, agreed on by every rank."""

from __future__ import annotations

import os
import re
from pathlib import Path

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


def make_run_dir(runs_root: str | os.PathLike, experiment: str, version: str | None = None) -> Path:
    """Create (rank 0) or look up (other ranks) this run's directory.

    Lightning's DDP launcher starts the other ranks from this process, so they inherit
    ALTERNET_RUN_DIR; SLURM / torchrun ranks start alone and name the version after the job id.
    An existing directory is never reused: a new version is made instead.
    """
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    parent = Path(runs_root) / experiment
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
    if version is None and job and job != "none":
        version = f"job_{job}"
    rank = global_rank_from_env()
    if rank == 0:
        parent.mkdir(parents=True, exist_ok=True)
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
