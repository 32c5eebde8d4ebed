"""Resuming a run where it stopped: which checkpoint, which run directory, and what must survive.

`fit --ckpt_path last` goes on in the run it names (`--version`, else the SLURM job's folder, else
the experiment's newest `version_N`) from its newest checkpoint (`checkpoints/last.ckpt` or the
`hpc_ckpt_N.ckpt` Lightning writes on SLURM's warning signal); `--ckpt_path PATH` goes on in the
run that holds PATH. Besides what Lightning restores (weights, optimizer, schedule, loop counters,
callback states), `RNGStates` restores the global random generators, so a resumed run draws the
same augmentations, dropout and data order as one never interrupted, and `ResumingCSVLogger`
keeps the metrics.csv rows written before the checkpoint (Lightning's CSV logger would delete
the file).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

from alternet_pl.errors import MissingInputError
from alternet_pl.runs import checkpoints_dir

__all__ = [
    "MetricsRowCount",
    "RNGStates",
    "ResumingCSVLogger",
    "kept_rows",
    "newest_checkpoint",
    "rows_before",
]


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written of `checkpoints/last.ckpt` and Lightning's `hpc_ckpt_N.ckpt`."""
    found = [
        p for p in [checkpoints_dir(run_dir) / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()
    ]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def check_checkpoint_path(path: str) -> Path:
    ckpt = Path(path)
    if not ckpt.is_file():
        raise MissingInputError(
            f"--ckpt_path {path} not found; pass a checkpoint file, or `last` to go on with the newest "
            "run of this experiment"
        )
    return ckpt


def rows_before(metrics_csv: Path, step: int) -> list[dict[str, str]]:
    """The rows of a metrics.csv logged before global step `step` (what a checkpoint at `step` saw)."""
    if not metrics_csv.is_file():
        return []
    with open(metrics_csv, newline="") as fh:
        return [
            row for row in csv.DictReader(fh) if row.get("step") not in (None, "") and int(row["step"]) < step
        ]


class ResumingCSVLogger(CSVLogger):
    """`CSVLogger` that starts from given rows instead of deleting an existing metrics.csv."""

    def __init__(self, *args: Any, keep_rows: list[dict[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_rows = keep_rows or []

    @property
    @rank_zero_experiment
    def experiment(self):  # noqa: ANN201  (Lightning's experiment writer)
        if self._experiment is not None:
            return self._experiment
        writer = CSVLogger.experiment.fget(self)  # creates the writer, which deletes the old file
        if self._keep_rows:
            keys = sorted({k for row in self._keep_rows for k in row if k})
            with open(writer.metrics_file_path, "w", newline="") as fh:
                out = csv.DictWriter(fh, fieldnames=keys)
                out.writeheader()
                out.writerows({k: row.get(k, "") for k in keys} for row in self._keep_rows)
            writer.metrics_keys = keys
            self._keep_rows = []
        return writer

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Flush the rows logged so far with every checkpoint: a run killed later loses none of them."""
        super().after_save_checkpoint(checkpoint_callback)
        self.save()


class MetricsRowCount(pl.Callback):
    """Keep in each checkpoint how many metrics.csv rows were logged before it (written or pending).

    On resume, `fit` keeps exactly these rows: the rows a killed run wrote after its last checkpoint
    are dropped, and none logged before it is lost or repeated.
    """

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        if self._trainer is None or not self._trainer.is_global_zero:
            return {}
        for logger in self._trainer.loggers:
            if isinstance(logger, CSVLogger):
                writer = logger.experiment
                written = 0
                if Path(writer.metrics_file_path).is_file():
                    with open(writer.metrics_file_path, newline="") as fh:
                        written = sum(1 for _ in csv.DictReader(fh))
                return {"rows": written + len(writer.metrics)}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass  # read by `kept_rows` before the logger starts


def kept_rows(checkpoint: dict[str, Any], metrics_csv: Path) -> list[dict[str, str]]:
    """The metrics.csv rows to keep when resuming from `checkpoint`.

    The rows logged before it was written (`MetricsRowCount`), plus the rows logged after it at an
    earlier step: Lightning logs an epoch's training averages right after its end-of-epoch
    checkpoint, and does not log them again on resume. Checkpoints without the count: the rows
    before its global step.
    """
    step = int(checkpoint.get("global_step", 0))
    count = (checkpoint.get("callbacks") or {}).get("MetricsRowCount", {}).get("rows")
    if count is None:
        return rows_before(metrics_csv, step)
    if not metrics_csv.is_file():
        return []
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    late = [r for r in rows[int(count) :] if r.get("step") not in (None, "") and int(r["step"]) < step]
    return rows[: int(count)] + late


class RNGStates(pl.Callback):
    """Keep the global torch / numpy / python random states in checkpoints and restore them on resume.

    Lightning re-seeds at start-up but does not save the generators' states, so without this a
    resumed run draws other augmentations, Mixup pairs and dropout masks than the uninterrupted one.
    The states are stored as tensors and plain lists (checkpoints stay weights-only readable).
    """

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        name, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "python": [version, list(internal), gauss],
            "numpy": [
                name,
                torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                int(pos),
                int(has_gauss),
                float(cached),
            ],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        torch.set_rng_state(state_dict["torch"])
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
