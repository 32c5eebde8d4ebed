"""Loggers: a W&B logger that can never kill a training run, offline by default, filed by run."""

from __future__ import annotations

import logging
import os
import secrets
import string
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.loggers import WandbLogger

from alternet_pl.analysis.files import write_text
from alternet_pl.errors import InputError
from alternet_pl.loggers.offline import default_wandb_offline
from alternet_pl.loggers.tables import tag_architecture
from alternet_pl.runs import RUN_DIR_ENV, global_rank_from_env

__all__ = ["RUN_ID_FILE", "LogModel", "SafeWandbLogger", "default_wandb_offline", "run_id_for"]

#: the W&B run id of a run directory: a resumed or requeued fit continues that W&B run
RUN_ID_FILE = "wandb_run_id"
#: checkpoints uploaded as W&B artifacts: none, those of the end of training (last and best), or each one
LogModel = Literal["off", "last", "all"]
_LIGHTNING_LOG_MODEL = {"off": False, "last": True, "all": "all", False: False, True: True}

log = logging.getLogger(__name__)


class SafeWandbLogger(WandbLogger):
    """`WandbLogger` with this project's defaults, whose failures never stop training.

    Defaults: offline unless an API key is configured (`default_wandb_offline`); inside a `fit` run
    (`ALTERNET_RUN_DIR` set) its files go to the run directory and the run joins the W&B group of its
    experiment (`runs/<experiment>/<version>`), so ResNet / ViT / AlterNet runs of one experiment
    sit side by side. Explicit `save_dir` / `dir` / `group` win.

    One W&B run per training run: its id is kept in `<run dir>/wandb_run_id`, so a fit resumed with
    `--ckpt_path last` (or requeued by SLURM) continues the same W&B run (`resume="allow"`); `fit` sets
    the whole merged config (model, data, trainer, analyses) as the run's config (`set_run_config`).

    Failures (network, auth, disk) are logged as warnings; after the first one the logger disables
    itself, so training goes on with the other loggers. `finalize` (end of fit) ends the W&B run, so
    every fit in a process gets its own run.

    Args:
        name: the W&B run name.
        save_dir: where W&B writes its files (default: the run directory, else ".").
        group: the W&B group (default: the run's experiment name).
        log_model: checkpoints as W&B artifacts: "off", "last" (at the end of training: last and best),
            "all" (every checkpoint as it is written). `false` / `true` mean "off" / "last".
        kwargs: any other `WandbLogger` / `wandb.init` argument (project, tags, offline, ...).
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | None = None,
        group: str | None = None,
        log_model: LogModel | bool = "off",
        **kwargs: Any,
    ) -> None:
        default_wandb_offline()
        if log_model not in _LIGHTNING_LOG_MODEL:
            raise InputError(f"log_model={log_model!r}; choose one of 'off', 'last', 'all'")
        run_dir = os.environ.get(RUN_DIR_ENV)
        if save_dir is None and kwargs.get("dir") is None:
            save_dir = run_dir or "."
        if group is None and run_dir:
            group = Path(run_dir).parent.name
        run_id = kwargs.pop("id", None) or kwargs.pop("version", None)
        if run_id is None and run_dir:
            run_id = run_id_for(Path(run_dir))
        if run_id is not None:
            kwargs.setdefault("resume", "allow")
        super().__init__(
            name=name,
            save_dir=save_dir,
            group=group,
            id=run_id,
            log_model=_LIGHTNING_LOG_MODEL[log_model],
            **kwargs,
        )
        self._failed = False
        self._run_config: dict[str, Any] | None = None

    def set_run_config(self, config: dict[str, Any]) -> None:
        """The whole merged config of the run: logged as the W&B config in place of the model's arguments."""
        self._run_config = config

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
        config = self._run_config if self._run_config is not None else params
        self._guard("log_hyperparams", super().log_hyperparams, config, *args, **kwargs)
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


def run_id_for(run_dir: Path) -> str:
    """The W&B run id of `run_dir`: read from its `wandb_run_id` file, else made (and written by rank 0)."""
    path = run_dir / RUN_ID_FILE
    if path.is_file():
        found = path.read_text().strip()
        if found:
            return found
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's form
    if global_rank_from_env() == 0:
        write_text(path, run_id + "\n")
    return run_id
