"""Loggers: a W&B logger that can never kill a training run, offline by default, filed by run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from alternet_pl.loggers.offline import default_wandb_offline
from alternet_pl.loggers.tables import tag_architecture
from alternet_pl.runs import RUN_DIR_ENV

__all__ = ["SafeWandbLogger", "default_wandb_offline"]

log = logging.getLogger(__name__)


class SafeWandbLogger(WandbLogger):
    """`WandbLogger` with this project's defaults, whose failures never stop training.

    Defaults: offline unless an API key is configured (`default_wandb_offline`); inside a `fit` run
    (`ALTERNET_RUN_DIR` set) its files go to the run directory and the run joins the W&B group of its
    experiment (`runs/<experiment>/<version>`), so ResNet / ViT / AlterNet runs of one experiment
    sit side by side. Explicit `save_dir` / `dir` / `group` win.

    Failures (network, auth, disk) are logged as warnings; after the first one the logger disables
    itself, so training goes on with the other loggers. `finalize` (end of fit) ends the W&B run, so
    every fit in a process gets its own run.

    Args:
        name: the W&B run name.
        save_dir: where W&B writes its files (default: the run directory, else ".").
        group: the W&B group (default: the run's experiment name).
        kwargs: any other `WandbLogger` / `wandb.init` argument (project, tags, offline, ...).
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | None = None,
        group: str | None = None,
        **kwargs: Any,
    ) -> None:
        default_wandb_offline()
        run_dir = os.environ.get(RUN_DIR_ENV)
        if save_dir is None and kwargs.get("dir") is None:
            save_dir = run_dir or "."
        if group is None and run_dir:
            group = Path(run_dir).parent.name
        super().__init__(name=name, save_dir=save_dir, group=group, **kwargs)
        self._failed = False

    def _guard(self, what: str, fn, *args: Any, **kwargs: Any) -> Any:
        if self._failed:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001  (W&B must never kill a run)
            self._failed = True
            log.warning(
                "W&B %s failed (%s: %s); W&B logging is off for this run", what, type(err).__name__, err
            )
            return None

    def log_metrics(self, metrics, step=None) -> None:
        self._guard("log_metrics", super().log_metrics, metrics, step)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self._guard("log_hyperparams", super().log_hyperparams, params, *args, **kwargs)
        if not self._failed:  # runs tagged by architecture (resnet / vit / alter ...)
            tag_architecture(self, params)

    def log_image(self, *args: Any, **kwargs: Any) -> None:
        self._guard("log_image", super().log_image, *args, **kwargs)

    def log_table(self, *args: Any, **kwargs: Any) -> None:
        self._guard("log_table", super().log_table, *args, **kwargs)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self._guard("after_save_checkpoint", super().after_save_checkpoint, checkpoint_callback)

    def finalize(self, status: str) -> None:
        """Lightning's finalize, then end the W&B run: Lightning leaves it open, and a later fit in the
        same process (e.g. `reproduce --scale smoke`, five fits) would log into it instead of its own."""
        self._guard("finalize", super().finalize, status)
        try:
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=0 if status == "success" and not self._failed else 1)
        except Exception as err:  # noqa: BLE001  (W&B must never kill a run)
            log.warning("W&B finish failed (%s: %s)", type(err).__name__, err)
