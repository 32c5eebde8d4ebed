"""Resuming a run where it stopped: which checkpoint, which run directory, and what must survive.

`fit --ckpt_path last` goes on in the run it names (`--version`, else the SLURM job's folder, else
the experiment's newest `version_N`) from its newest checkpoint (`checkpoints/last.ckpt` or the
`hpc_ckpt_N.ckpt` written on SLURM's warning signal); `--ckpt_path PATH` goes on in the
run that holds PATH. Besides what Lightning restores (weights, optimizer, schedule, loop counters,
callback states), `RNGStates` restores the global random generators, so a resumed run draws the
same augmentations, dropout and data order as one never interrupted, and `ResumingCSVLogger`
keeps the metrics.csv rows written before the checkpoint (Lightning's CSV logger would delete
the file).
"""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from torchmetrics import Metric

from alternet_pl.errors import InputError, MissingInputError
from alternet_pl.old_runs import upgrade_flat_config
from alternet_pl.runs import ANALYSIS_DIR, CONFIG_FILE, METRICS_FILE, checkpoints_dir, run_dir_of_checkpoint

__all__ = [
    "LoaderPosition",
    "MetricsRowCount",
    "MetricStates",
    "RNGStates",
    "ResumingCSVLogger",
    "check_same_model",
    "find_last",
    "is_run_dir",
    "what_was_kept",
    "finish_fit_end_analyses",
    "remove_if_unstarted",
    "kept_rows",
    "newest_checkpoint",
    "rows_before",
]


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written of `checkpoints/last.ckpt` and the `hpc_ckpt_N.ckpt` of SLURM requeues."""
    found = [
        p for p in [checkpoints_dir(run_dir) / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()
    ]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def is_run_dir(folder: Path) -> bool:
    """A folder `fit` made: config.yaml beside checkpoints/ or metrics.csv."""
    return (folder / CONFIG_FILE).is_file() and (
        checkpoints_dir(folder).is_dir() or (folder / METRICS_FILE).is_file()
    )


def what_was_kept(run_dir: Path | None) -> str:
    """Where a stopped run stands and the command that goes on with it (for one-line messages)."""
    if run_dir is None or not Path(run_dir).is_dir():
        return "nothing was kept (training had not started); run the command again"
    ckpt = newest_checkpoint(Path(run_dir))
    if ckpt is None:
        return f"{run_dir} holds no checkpoint yet; run the command again to start over"
    return (
        f"kept {run_dir} (newest checkpoint {ckpt}); go on with: python -m alternet_pl.fit "
        f"--config {Path(run_dir) / CONFIG_FILE} --ckpt_path {ckpt}"
    )


def check_checkpoint_path(path: str) -> Path:
    ckpt = Path(path)
    if not ckpt.is_file():
        raise MissingInputError(
            f"--ckpt_path {path} not found; pass a checkpoint file, or `last` to go on with the newest "
            "run of this experiment"
        )
    return ckpt


def find_last(parent: Path, version: str | None, job: str | None) -> tuple[str | None, Path | None]:
    """What `--ckpt_path last` resumes: `(version folder, checkpoint)`.

    With `--version`: that run's newest checkpoint. In a SLURM / torchrun job: the job's folder
    (no checkpoint yet is the job's first start: a fresh run there). Else the run of the experiment
    (`parent`) whose newest checkpoint is the most recent. Raises `InputError` when there is none.
    """
    if version is not None or job is not None:
        name = version or job
        ckpt = newest_checkpoint(parent / name)  # type: ignore[operator]
        if ckpt is None and version is not None:
            raise MissingInputError(
                f"--ckpt_path last --version {version}: {parent / version} has no checkpoint to resume "
                f"(no checkpoints/last.ckpt or hpc_ckpt_*.ckpt); leave out --ckpt_path to start a new run"
            )
        return name, ckpt
    found = [(ckpt, run) for run in _runs(parent) if (ckpt := newest_checkpoint(run)) is not None]
    if not found:
        raise MissingInputError(
            f"--ckpt_path last: no run of experiment {parent.name!r} under {parent} has a checkpoint to "
            "resume; leave out --ckpt_path to start a new run (or pass --ckpt_path <file.ckpt>)"
        )
    ckpt, run = max(found, key=lambda pair: pair[0].stat().st_mtime_ns)
    return run.name, ckpt


def _runs(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []


def check_same_model(ckpt: Path, checkpoint: dict[str, Any], model: Any, experiment: str) -> None:
    """Refuse, before any file is touched, a checkpoint of another experiment or architecture.

    `model`: the config's `model` section (a namespace or dict of `ImageClassifier`'s arguments).
    Raises `InputError` naming what differs and the config to resume it with.
    """
    own = run_dir_of_checkpoint(ckpt)
    hint = f"--config {own / 'config.yaml'}" if own is not None else "the config of the run that wrote it"
    if own is not None and own.parent.name != experiment:
        raise InputError(
            f"checkpoint {ckpt} belongs to experiment {own.parent.name!r}, not {experiment!r}; resume it "
            f"with {hint} (or pass --experiment {own.parent.name})"
        )
    saved, wanted = _architecture(checkpoint.get("hyper_parameters")), _architecture(model)
    for key, value in saved.items():
        if value is not None and wanted.get(key) is not None and value != wanted[key]:
            raise InputError(
                f"checkpoint {ckpt} was written with {key}={value!r}, this config has {key}="
                f"{wanted[key]!r}; resume it with {hint}"
            )


def _architecture(model_config: Any) -> dict[str, Any]:
    """What fixes the weights' shapes in a `model:` config or a checkpoint's hyperparameters (the
    grouped layout or the flat one of older runs): network name, its kwargs, the number of classes."""
    config = _plain(model_config) if model_config is not None else {}
    config = upgrade_flat_config(dict(config)) if isinstance(config, dict) else {}
    network = config.get("network") if isinstance(config.get("network"), dict) else {}
    return {
        "network": network.get("name"),
        "network kwargs": dict(network.get("kwargs") or {}) if "name" in network else None,
        "num_classes": config.get("num_classes"),
    }


def _plain(value: Any) -> Any:
    """A config value as plain Python (jsonargparse namespaces to dicts)."""
    return {k: _plain(v) for k, v in vars(value).items()} if hasattr(value, "__dict__") else value


def remove_if_unstarted(run_dir: Path) -> bool:
    """Delete a run folder that a failed start left with nothing of value (no checkpoint, no metrics
    row, no analysis result): only its config.yaml / hparams.yaml. Returns whether it was removed."""
    if not run_dir.is_dir() or any(run_dir.rglob("*.ckpt")) or (run_dir / ANALYSIS_DIR).is_dir():
        return False
    metrics = run_dir / METRICS_FILE
    if metrics.is_file() and len(metrics.read_text().splitlines()) > 1:
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def finish_fit_end_analyses(trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[str]:
    """Run the end-of-fit analyses a killed run did not finish, when `fit` resumed a run whose training
    was already complete (Lightning then skips training and its `on_train_end` hooks) and flush the
    rows they logged. Returns the names of the analyses run."""
    ran = []
    for callback in trainer.callbacks:  # AnalysisCallbacks (duck-typed: they import this package)
        schedule = getattr(callback, "schedule", None)
        wanted = schedule is not None and "fit_end" in schedule.at and hasattr(callback, "done")
        if wanted and ("epoch", trainer.current_epoch) not in callback.done:
            pl_module.to(trainer.strategy.root_device)
            callback.on_train_end(trainer, pl_module)
            ran.append(callback.name)
    for logger in trainer.loggers if ran else ():  # Lightning's end-of-fit flush has already run
        logger.save()
    return ran


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


class LoaderPosition(pl.Callback):
    """Keep in each checkpoint where the training data stood: the epoch and the batches read in it.

    On resume it tells the data module (`resume_at(epoch, batches)`, see
    `alternet_pl.data.resumable`), which starts its next training loader there: a run resumed from a
    mid-epoch checkpoint (`--checkpoint_every_n_steps`, SLURM's `hpc_ckpt_N.ckpt`) reads the rest of
    that epoch, no batch twice and none skipped. The batches read are the ones Lightning's loop counts
    as processed (a checkpoint written in the middle of a batch's hooks, as SLURM's signal handler
    does, included); an end-of-epoch checkpoint holds the next epoch at 0.
    """

    def __init__(self) -> None:
        self.epoch, self.batches = 0, 0
        self._ended = False
        self._trainer: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ended = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ended = True  # before the epoch-end checkpoint: Lightning runs checkpoint callbacks last

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        if getattr(getattr(trainer, "state", None), "fn", None) == "fit":
            epoch = trainer.current_epoch
            processed = trainer.fit_loop.epoch_loop.batch_progress.current.processed
            self.epoch, self.batches = (epoch + 1, 0) if self._ended else (epoch, int(processed))
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch, self.batches = int(state_dict["epoch"]), int(state_dict["batches"])
        datamodule = getattr(self._trainer, "datamodule", None)
        if hasattr(datamodule, "resume_at"):
            datamodule.resume_at(self.epoch, self.batches)


class MetricStates(pl.Callback):
    """Keep the LightningModule's torchmetrics states (sums and counts so far) in checkpoints.

    An epoch's logged averages (`train/loss_epoch`, `train/acc1`) accumulate in torchmetrics objects
    whose states are not part of the module's state_dict; without them a run resumed mid-epoch
    would average only the batches read after the restart. Under DDP each rank keeps its own sums.
    """

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._ended = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ended = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ended = True  # an epoch-end checkpoint starts the next epoch's sums from zero

    def _metrics(self) -> dict[str, Metric]:
        module = getattr(self._trainer, "lightning_module", None)
        if module is None:
            return {}
        return {name: m for name, m in module.named_modules() if isinstance(m, Metric)}

    def state_dict(self) -> dict[str, Any]:
        saved: dict[str, Any] = {}
        if self._ended:  # the finished epoch's sums were logged; the next epoch starts from zero
            return saved
        world = self._trainer.world_size if self._trainer is not None else 1
        for name, metric in self._metrics().items():
            states = {k: getattr(metric, k) for k in metric._defaults}
            if not all(isinstance(v, torch.Tensor) for v in states.values()):
                continue
            if world > 1:  # each rank's own sums, as [rank, ...] (every rank builds the checkpoint)
                states = {k: self._trainer.strategy.all_gather(v.detach()) for k, v in states.items()}
            saved[name] = {"update_count": int(metric._update_count), "states": states, "ranks": world}
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        metrics = self._metrics()
        rank, world = (self._trainer.global_rank, self._trainer.world_size) if self._trainer else (0, 1)
        for name, saved in state_dict.items():
            metric = metrics.get(name)
            if metric is None or int(saved.get("ranks", 1)) != world:
                continue  # another number of processes: the resumed epoch averages its own batches
            for key, value in saved["states"].items():
                setattr(metric, key, (value[rank] if world > 1 else value).to(getattr(metric, key).device))
            metric._update_count = int(saved["update_count"])
            metric._computed = None
