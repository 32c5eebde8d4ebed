"""SLURM's warning signal, answered where a checkpoint is exact: at a batch's or an epoch's end.

Lightning's SLURM environment saves `hpc_ckpt_N.ckpt` and requeues the job from inside its signal
handler, at whatever line the signal interrupts: in a batch's `on_train_batch_end` hooks before
Lightning has logged the step's metrics (the requeue kills the job, that row is never written and the
resumed run does not log it again), in the forward pass (random generators saved half-way through a
batch's draws) or in the optimizer step (weights half updated). `RequeueAtBatchEnd` installs, before
Lightning registers its own, a handler that only notes the signal (Lightning then leaves the signal
to it). The checkpoint is written where `ModelCheckpoint` writes its own, which a resume restores
exactly: after the batch in progress (at the epoch's end, after validation and the epoch's analyses,
when that batch is the epoch's last). The job is requeued (SLURM kills it) when the next batch
starts: by then the step's metrics row is in metrics.csv. A signal in the last epoch's end is not
requeued: training is done, and the job goes on with the end-of-fit analyses (killed at the time
limit, they run on `fit --ckpt_path last`).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Checkpoint

__all__ = ["RequeueAtBatchEnd", "hpc_checkpoint_path", "requeue_slurm_job"]

log = logging.getLogger(__name__)


def hpc_checkpoint_path(folder: str | Path) -> Path:
    """The next `hpc_ckpt_N.ckpt` in `folder` (N one above the highest there), Lightning's naming."""
    names = (re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name) for p in Path(folder).glob("hpc_ckpt_*.ckpt"))
    numbers = [int(match.group(1)) for match in names if match]
    return Path(folder) / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


def requeue_slurm_job() -> int:
    """`scontrol requeue` this job (an array task as `<array job>_<task>`); returns scontrol's status."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    status = subprocess.call(["scontrol", "requeue", job])
    (log.info if status == 0 else log.warning)(f"scontrol requeue {job}: exit status {status}")
    return status


class RequeueAtBatchEnd(Checkpoint):
    """On SLURM's warning signal (with Lightning's auto-requeue), write `hpc_ckpt_N.ckpt` in the run
    folder at the end of the batch in progress and requeue the job when the next batch starts.

    A `Checkpoint` callback, so Lightning runs it after the other callbacks' hooks, as it does
    `ModelCheckpoint`. Under DDP the ranks agree on the signal at each batch's end (one small
    all-reduce a batch, only in SLURM jobs), so they save at the same step.
    """

    def __init__(self) -> None:
        self._signal: int | None = None
        self._previous_handler: Any = None
        self._received = False
        self._requeue_pending = False
        self.last_model_path = ""  # the newest hpc checkpoint (read by the NaN guard's message)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning's cluster environment, where its signal connector reads the requeue signal
        environment = trainer._accelerator_connector.cluster_environment
        wanted = isinstance(environment, SLURMEnvironment) and environment.auto_requeue
        if stage != "fit" or not wanted or environment.requeue_signal is None:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # Python installs signal handlers from the main thread only (Lightning's rule too)
        self._signal = int(environment.requeue_signal)
        self._previous_handler = signal.signal(self._signal, self._note_signal)

    def _note_signal(self, signum: int, frame: Any) -> None:
        self._received = True  # nothing else here: the signal may interrupt any line, a lock's holder too

    def _save_if_signalled(self, trainer: pl.Trainer) -> None:
        if self._signal is None or not trainer.strategy.reduce_boolean_decision(self._received, all=False):
            return
        self._received = False
        for logger in trainer.loggers:
            logger.save()
        path = str(hpc_checkpoint_path(trainer.default_root_dir))
        log.info(f"SLURM's warning signal: saving {path}; the job is requeued when the next batch starts")
        trainer.save_checkpoint(path)
        self.last_model_path, self._requeue_pending = path, True

    def _requeue_if_saved(self, trainer: pl.Trainer) -> None:
        if not self._requeue_pending:
            return
        self._requeue_pending = False
        for logger in trainer.loggers:
            logger.save()
        if trainer.is_global_zero:
            requeue_slurm_job()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._save_if_signalled(trainer)  # the epoch's last batch: at the epoch's end, after validation

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_if_signalled(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._requeue_if_saved(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._requeue_pending = False  # training is done: this job goes on with the end-of-fit analyses

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._signal is not None:
            signal.signal(self._signal, self._previous_handler or signal.SIG_DFL)
            self._signal = None
