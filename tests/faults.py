"""Fault injection for the resume tests: callbacks a test adds to a `fit` subprocess by config."""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl


class KillAtStep(pl.Callback):
    """SIGKILL this process (no cleanup, as an out-of-memory kill or a node failure) at a global step.

    `after_checkpoint`: at the start of the next batch instead, i.e. right after any checkpoint the
    step wrote (Lightning runs checkpoint callbacks after all others at a batch's end).
    """

    def __init__(self, step: int, sig: int = int(signal.SIGKILL), after_checkpoint: bool = False) -> None:
        self.step, self.sig, self.after_checkpoint = step, sig, after_checkpoint

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.after_checkpoint:
            os.kill(os.getpid(), self.sig)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self.after_checkpoint:
            os.kill(os.getpid(), self.sig)


class SignalAtStep(KillAtStep):
    """Send this process a signal (default SIGUSR1, SLURM's warning signal) at a global step."""

    def __init__(self, step: int, sig: int = int(signal.SIGUSR1)) -> None:
        super().__init__(step, sig)


class InterruptAtStep(pl.Callback):
    """Raise KeyboardInterrupt (what Ctrl-C does) when a batch starts at a global step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class KillAtTrainEnd(pl.Callback):
    """SIGKILL this process when training ends, before the end-of-fit analyses run (a config's
    callbacks come before its analyses, so this hook runs first): the state a kill during them leaves."""

    def on_train_end(self, trainer, pl_module) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
