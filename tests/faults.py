"""Fault injection for the resume tests: callbacks a test adds to a `fit` subprocess by config."""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl


class KillAtStep(pl.Callback):
    """SIGKILL this process (no cleanup, as an out-of-memory kill or a node failure) at a global step."""

    def __init__(self, step: int, sig: int = int(signal.SIGKILL)) -> None:
        self.step, self.sig = step, sig

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.sig)


class SignalAtStep(KillAtStep):
    """Send this process a signal (default SIGUSR1, SLURM's warning signal) at a global step."""

    def __init__(self, step: int, sig: int = int(signal.SIGUSR1)) -> None:
        super().__init__(step, sig)
