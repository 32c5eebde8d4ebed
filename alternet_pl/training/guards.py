"""`NonFiniteLossGuard`: stop training at the first NaN / Inf loss, before it reaches the weights.

The check runs in `on_before_backward`, so the step that met the bad loss has not updated the
weights or the optimizer, and no checkpoint is written after it: the last checkpoint on disk is the
last good one. Under DDP every rank stops together (the decision is reduced over ranks).
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning.pytorch as pl
import torch

from alternet_pl.errors import TrainingStopped

__all__ = ["NonFiniteLossError", "NonFiniteLossGuard", "newest_checkpoint_written"]


def newest_checkpoint_written(trainer: pl.Trainer) -> str:
    """The most recently written checkpoint of all the trainer's checkpoint callbacks ("" if none).

    Every checkpoint on disk holds finite weights (the guard stops before a bad step updates them),
    so the newest is the last good one: `last.ckpt` or a step checkpoint, usually not the best one.
    """
    paths = {
        path
        for callback in trainer.checkpoint_callbacks
        for path in (getattr(callback, "last_model_path", ""), getattr(callback, "best_model_path", ""))
        if path and os.path.isfile(path)
    }
    return max(paths, key=lambda p: os.stat(p).st_mtime_ns) if paths else ""


class NonFiniteLossError(TrainingStopped):
    """The training loss became NaN or Inf; the message names the step and the checkpoint to resume."""


class NonFiniteLossGuard(pl.Callback):
    """Raise `NonFiniteLossError` (one message: step, epoch, last finite loss, checkpoint to resume from).

    Its state (the last finite loss and its step) is kept in checkpoints.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last_finite: float | None = None
        self.last_finite_step: int | None = None

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        value = float(loss.detach().float().mean())
        bad = not math.isfinite(value)
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            self.last_finite, self.last_finite_step = value, trainer.global_step
            return
        last = (
            f"last finite loss {self.last_finite:.6g} at step {self.last_finite_step}"
            if self.last_finite is not None
            else "no finite loss before it"
        )
        raise NonFiniteLossError(
            f"the training loss is {value} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
            f"{last}. Weights were not updated with it. {self._resume_hint(trainer)}"
        )

    @staticmethod
    def _resume_hint(trainer: pl.Trainer) -> str:
        path = newest_checkpoint_written(trainer)
        if path:
            return (
                f"Last good checkpoint: {path}; resume from it with --ckpt_path {path} and a lower "
                "--model.recipe.optimizer.lr or --trainer.gradient_clip_val"
            )
        return (
            "No checkpoint was written yet: start again with a lower --model.recipe.optimizer.lr or "
            "gradient clipping"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"last_finite": self.last_finite, "last_finite_step": self.last_finite_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_finite = state_dict.get("last_finite")
        self.last_finite_step = state_dict.get("last_finite_step")
