"""The run directory, for writing and reading: its paths, `config.yaml`, result stems, error records.

A run is `runs/<experiment>/<version>/` (never overwritten, agreed on by every rank):

    config.yaml                       the merged `fit` config (`write_config` / `read_config`)
    metrics.csv                       the CSV logger's rows
    checkpoints/{last,best-...}.ckpt  (Lightning's `hpc_ckpt_N.ckpt` beside config.yaml on SLURM)
    analysis/<name>/<stem>.json|npz   a record of `alternet_pl.analysis.records`, one stem per run
                                      of the analysis: `epoch=003`, `last-epoch=003` (`result_stem`)
    analysis/<name>/<stem>[_<key>].png  its figures (`figure_name`)
    analysis/<name>/<stem>.error.json   an `ErrorRecord` where the analysis failed

`fit`, the analysis callbacks, `analyze`, resuming and the report all name these files through this
module, so the writer and the reader cannot disagree.
"""

from __future__ import annotations

import os
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from alternet_pl.analysis.files import read_json, write_json, write_text
from alternet_pl.errors import InputError

__all__ = [
    "make_writable_folder",
    "ANALYSIS_DIR",
    "CHECKPOINTS_DIR",
    "RUN_DIRECTORY_LINE",
    "CONFIG_FILE",
    "ERROR_SUFFIX",
    "METRICS_FILE",
    "RUN_DIR_ENV",
    "ErrorKind",
    "ErrorRecord",
    "analysis_dir",
    "analysis_root_of_checkpoint",
    "checkpoints_dir",
    "figure_name",
    "global_rank_from_env",
    "has_results",
    "job_version",
    "make_run_dir",
    "newest_version",
    "next_version",
    "read_config",
    "read_error_records",
    "record_path",
    "result_stem",
    "result_stems",
    "run_dir_of_checkpoint",
    "stem_order",
    "version_numbers",
    "write_config",
    "write_error_record",
]

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
#: how a finished fit names its run directory on stdout (read back by `reproduce --jobs N`)
RUN_DIRECTORY_LINE = "Run directory: "
CHECKPOINTS_DIR = "checkpoints"
ANALYSIS_DIR = "analysis"
#: file suffix of a failed analysis's error record, beside the results it would have written
ERROR_SUFFIX = ".error.json"
RUN_DIR_ENV = "ALTERNET_RUN_DIR"


def global_rank_from_env() -> int:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def version_numbers(parent: str | os.PathLike) -> list[int]:
    """The N of each `version_N` folder of an experiment folder, ascending."""
    names = (p.name for p in Path(parent).glob("version_*"))
    return sorted(int(m.group(1)) for name in names if (m := re.fullmatch(r"version_(\d+)", name)))


def next_version(parent: Path) -> str:
    """The first `version_N` after every existing one (`version_0` in a new experiment)."""
    return f"version_{max(version_numbers(parent), default=-1) + 1}"


def newest_version(parent: Path) -> str | None:
    """The highest `version_N` folder of an experiment (None when there is none)."""
    numbers = version_numbers(parent)
    return f"version_{numbers[-1]}" if numbers else None


def make_writable_folder(folder: Path, flag: str, label: str = "") -> None:
    """Create `folder` (and its parents) and check it is writable, before any work writes into it.

    Raises:
        InputError: it cannot be created or written; the line names `label` + the folder and `flag`.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"cannot create {label}{folder} ({err.strerror}); pass {flag}=<a writable folder>"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{label}{folder} is not writable; pass {flag}=<a writable folder>")


def has_results(run_dir: str | os.PathLike) -> bool:
    """Whether a run directory holds any logged metric row or analysis result to draw."""
    metrics = Path(run_dir) / METRICS_FILE
    if metrics.is_file() and len(metrics.read_text().splitlines()) > 1:
        return True
    return any(_is_result(p) for p in Path(run_dir).glob(f"{ANALYSIS_DIR}/*/*.json"))


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
        make_writable_folder(parent, "--runs_dir", label="the run folder ")
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


# ---- paths -----------------------------------------------------------------------------------------
def checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def analysis_dir(run_dir: str | os.PathLike, analysis: str) -> Path:
    """`<run_dir>/analysis/<analysis>/`: where the analysis's records, figures and error records go."""
    return Path(run_dir) / ANALYSIS_DIR / analysis


def run_dir_of_checkpoint(ckpt: str | os.PathLike) -> Path | None:
    """The run directory a checkpoint belongs to (`<run>/checkpoints/x.ckpt`, `<run>/hpc_ckpt_N.ckpt`,
    told by the config.yaml beside it); None for a checkpoint outside any run."""
    ckpt = Path(ckpt)
    if ckpt.parent.name == CHECKPOINTS_DIR and (ckpt.parent.parent / CONFIG_FILE).is_file():
        return ckpt.parent.parent
    if ckpt.name.startswith("hpc_ckpt_") and (ckpt.parent / CONFIG_FILE).is_file():
        return ckpt.parent
    return None


def analysis_root_of_checkpoint(ckpt: str | os.PathLike) -> Path:
    """Where `analyze` writes for a checkpoint by default: the run directory of `<run>/checkpoints/x.ckpt`,
    else the checkpoint's own folder."""
    ckpt = Path(ckpt)
    return ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS_DIR else ckpt.parent


# ---- config.yaml -----------------------------------------------------------------------------------
def write_config(run_dir: str | os.PathLike, text: str) -> Path:
    """Write the run's `config.yaml` (the YAML text `fit`'s parser dumps); returns its path."""
    return write_text(Path(run_dir) / CONFIG_FILE, text)


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's `config.yaml` as a dict ({} when the run has none). Raises `InputError` when the file
    is not a YAML mapping."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(
            f"{path} is not valid YAML ({' '.join(str(err).split())}); rewrite or remove it"
        ) from None
    if not isinstance(config, dict):
        raise InputError(
            f"{path} holds a {type(config).__name__}, not a config mapping; rewrite or remove it"
        )
    return config


# ---- result stems ----------------------------------------------------------------------------------
_STEM_EPOCH = re.compile(r"epoch=(\d+)")


def result_stem(epoch: int, checkpoint: str | None = None) -> str:
    """The stem of an analysis's files: `epoch=003` during `fit` (epochs completed), and
    `<checkpoint>-epoch=003` when `analyze` ran on the checkpoint file named `<checkpoint>`."""
    return f"{checkpoint}-epoch={epoch:03d}" if checkpoint else f"epoch={epoch:03d}"


def stem_order(stem: str) -> tuple[int, int, str]:
    """Sort key, latest last: by epoch, then a plain `epoch=N` before `<checkpoint>-epoch=N`, then by name."""
    m = _STEM_EPOCH.search(stem)
    return (int(m.group(1)) if m else -1, 0 if stem.startswith("epoch=") else 1, stem)


def figure_name(stem: str, key: str = "") -> str:
    """A figure's file name: `<stem>.png` for the key "", else `<stem>_<key>.png`."""
    return f"{stem}.png" if not key else f"{stem}_{key}.png"


def record_path(run_dir: str | os.PathLike, analysis: str, stem: str) -> Path:
    """The JSON file of an analysis's record at `stem` (`records.load_record` finds the .npz beside it)."""
    return analysis_dir(run_dir, analysis) / f"{stem}.json"


def _is_result(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and not path.name.endswith(ERROR_SUFFIX)


def result_stems(run_dir: str | os.PathLike, analysis: str) -> list[str]:
    """The stems an analysis wrote a record (`<stem>.json`) for, oldest first."""
    files = [p for p in analysis_dir(run_dir, analysis).glob("*.json") if _is_result(p)]
    return sorted((p.stem for p in files), key=stem_order)


# ---- error records ---------------------------------------------------------------------------------
#: "error": the analysis raised; "nonfinite": it met NaN/Inf; "unreadable": the record could not be read
ErrorKind = Literal["error", "nonfinite", "unreadable"]


@dataclass(frozen=True)
class ErrorRecord:
    """A failed analysis, as `<run>/analysis/<analysis>/<stem>.error.json` holds it.

    The file holds `analysis`, `epoch`, `kind`, `error` (the exception's one-line message) and
    `traceback`; `stem` and `path` come from where it lies."""

    analysis: str
    stem: str
    epoch: int | None
    kind: ErrorKind
    error: str
    traceback: str
    path: Path

    @classmethod
    def read(cls, path: Path) -> ErrorRecord:
        """The record at `path`; a file that cannot be read or lacks a field gives kind "unreadable"
        with the reason as its `error`, so that a failure is never silently dropped."""
        stem = path.name.removesuffix(ERROR_SUFFIX)
        try:
            doc = read_json(path)
            return cls(doc["analysis"], stem, doc["epoch"], doc["kind"], doc["error"], doc["traceback"], path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            reason = f"unreadable error record ({type(err).__name__}: {err})"
            return cls(path.parent.name, stem, None, "unreadable", reason, "", path)


def write_error_record(
    run_dir: str | os.PathLike, analysis: str, stem: str, epoch: int, err: BaseException
) -> Path:
    """Write `<run_dir>/analysis/<analysis>/<stem>.error.json` for `err`: its kind (an exception class
    may name it with `error_kind`, e.g. "nonfinite"), one-line message and traceback. Written instead of
    the analysis's result files, so the final summary, `analyze` and the report show the failure.
    Returns the path."""
    return write_json(
        analysis_dir(run_dir, analysis) / f"{stem}{ERROR_SUFFIX}",
        {
            "analysis": analysis,
            "epoch": epoch,
            "kind": getattr(err, "error_kind", "error"),
            "error": "".join(traceback.format_exception_only(type(err), err)).strip(),
            "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
        },
    )


def read_error_records(run_dir: str | os.PathLike) -> list[ErrorRecord]:
    """Every error record of a run, oldest stem first (then by analysis)."""
    paths = Path(run_dir).glob(f"{ANALYSIS_DIR}/*/*{ERROR_SUFFIX}")
    return [
        ErrorRecord.read(p)
        for p in sorted(paths, key=lambda p: (stem_order(p.name.removesuffix(ERROR_SUFFIX)), p.parent.name))
    ]
