"""Loggers: a W&B logger that can never kill a training run, and offline-by-default set-up."""

from __future__ import annotations

import logging
import netrc
import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def default_wandb_offline() -> None:
    """Use W&B offline unless an API key (env or ~/.netrc) is configured or WANDB_MODE is set."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    os.environ["WANDB_MODE"] = "offline"


class SafeWandbLogger(WandbLogger):
    """`WandbLogger` whose failures (network, auth, disk) are logged as warnings and then ignored.

    After the first failure it disables itself, so training goes on with the other loggers.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        default_wandb_offline()
        super().__init__(*args, **kwargs)
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

    def log_image(self, *args: Any, **kwargs: Any) -> None:
        self._guard("log_image", super().log_image, *args, **kwargs)

    def log_table(self, *args: Any, **kwargs: Any) -> None:
        self._guard("log_table", super().log_table, *args, **kwargs)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self._guard("after_save_checkpoint", super().after_save_checkpoint, checkpoint_callback)

    def finalize(self, status: str) -> None:
        self._guard("finalize", super().finalize, status)
