"""`AnalysisCallback`: schedule, data, rank handling, state restore, writing and logging for analyses.

A concrete analysis subclasses it, sets `name`, and implements `compute` (all ranks, pure
analysis calls) and optionally `plot` (rank 0 only, matplotlib figures from the result).
The same object serves `python -m alternet_pl.analyze` through `run(...)` with no Trainer.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import nn

from alternet_pl.analysis.dist import rank_and_world
from alternet_pl.analysis.loss import cross_entropy_loss
from alternet_pl.analysis.results import write_results
from alternet_pl.analysis.state import restore_state, to_device

log = logging.getLogger(__name__)

#: name -> AnalysisCallback subclass; filled by `AnalysisCallback.__init_subclass__`.
ANALYSES: dict[str, type[AnalysisCallback]] = {}

WHEN = ("fit_start", "warmup_end", "fit_end")

#: the paper's weight decay (AdamW, CIFAR recipe), used when a module does not say its own
PAPER_WEIGHT_DECAY = 0.05


@dataclass
class AnalysisResult:
    """What `compute` returns. `scalars` are logged as `<name>/<key>`; `summary` -> json; `arrays` -> npz."""

    scalars: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, Any] = field(default_factory=dict)


@dataclass
class AnalysisContext:
    """What `compute` may need besides model, loss and batches."""

    epoch: int
    out_dir: Path
    rank: int
    world_size: int
    module: pl.LightningModule | None = None  # the ImageClassifier (eval_loss, mixup, hparams)
    datamodule: pl.LightningDataModule | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class AnalysisCallback(pl.Callback):
    """Common knobs of every analysis callback.

    Args:
        every_n_epochs: also run after every n-th training epoch (None: only at the `at` points).
        at: any of "fit_start", "warmup_end" (after the last warm-up epoch), "fit_end".
        num_batches: how many batches of analysis data (the same fixed batches every time); None:
            the analysis's `default_num_batches`.
        batch_size: analysis batch size (None: the datamodule's).
        data: "val" (clean validation images) or "train" (training images; eval transform unless
            `augment`); None: "train" under a subclass's `paper_setting`, else "val".
        augment: use the training transform (and mixup when the module has it): the paper's setting;
            None: the subclass's `paper_setting` (False when it has none).
        seed: seeds the analysis data order and any randomness of the analysis itself.
        log_images: log figures to the Trainer's loggers (files are always written).
        strict: re-raise an analysis error during training; by default (one process) it is logged
            with its traceback and training goes on, since the model is restored either way. Under
            DDP an error is always re-raised: other ranks could be waiting in a collective.
    """

    name: ClassVar[str] = ""
    #: `num_batches` when none is given (each analysis sets what suits its cost)
    default_num_batches: ClassVar[int] = 4

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            ANALYSES[cls.name] = cls

    def __init__(
        self,
        every_n_epochs: int | None = None,
        at: Sequence[str] = ("fit_end",),
        num_batches: int | None = None,
        batch_size: int | None = None,
        data: str | None = None,
        augment: bool | None = None,
        seed: int = 0,
        log_images: bool = True,
        strict: bool = False,
    ) -> None:
        super().__init__()
        paper = bool(getattr(self, "paper_setting", False))  # set by subclasses before this call
        data = data or ("train" if paper else "val")
        augment = paper if augment is None else augment
        num_batches = self.default_num_batches if num_batches is None else num_batches
        bad = [a for a in at if a not in WHEN]
        if bad:
            raise ValueError(f"{type(self).__name__}: at={bad} not understood; choose from {WHEN}")
        if data not in ("val", "train"):
            raise ValueError(f"{type(self).__name__}: data={data!r}; choose 'val' or 'train'")
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(f"{type(self).__name__}: every_n_epochs must be >= 1 or None")
        if num_batches < 1:
            raise ValueError(f"{type(self).__name__}: num_batches must be >= 1")
        self.every_n_epochs = every_n_epochs
        self.at = tuple(at)
        self.num_batches = num_batches
        self.batch_size = batch_size
        self.data = data
        self.augment = augment
        self.seed = seed
        self.log_images = log_images
        self.strict = strict
        self.failures: list[int] = []
        self._done: set[tuple[str, int]] = set()

    # ---- to implement -------------------------------------------------------------------------
    def compute(
        self,
        model: nn.Module,
        loss_fn: Callable,
        batches: list,
        context: AnalysisContext,
    ) -> AnalysisResult:
        """Run the analysis on every rank and return the (rank-identical) result."""
        raise NotImplementedError

    def plot(self, result: AnalysisResult, context: AnalysisContext) -> dict[str, Any]:
        """Matplotlib figures from a result, {key: figure}; key "" is the main figure. Rank 0 only."""
        return {}

    # ---- data -----------------------------------------------------------------------------------
    def analysis_batches(self, datamodule: pl.LightningDataModule, module: pl.LightningModule | None) -> list:
        """The same fixed list of `num_batches` batches on every rank (analyses shard it themselves)."""
        if datamodule is None or not hasattr(datamodule, "analysis_batches"):
            raise RuntimeError(
                f"{type(self).__name__} needs a datamodule with `analysis_batches(...)` "
                "(every alternet_pl.data module has one)"
            )
        mixup = getattr(module, "mixup_fn", None) if self.augment else None
        return datamodule.analysis_batches(
            split=self.data,
            num_batches=self.num_batches,
            batch_size=self.batch_size,
            augment=self.augment,
            seed=self.seed,
            mixup_fn=mixup,
        )

    def weight_decay_coefficient(self, module: pl.LightningModule | None) -> float:
        """The weight-decay term's coefficient: `self.weight_decay` if given, else the module's under
        `paper_setting` (the paper's 0.05 if it has none), else 0 (the clean loss)."""
        weight_decay = getattr(self, "weight_decay", None)
        if weight_decay is not None:
            return float(weight_decay)
        if not getattr(self, "paper_setting", False):
            return 0.0
        return float(getattr(module, "weight_decay", PAPER_WEIGHT_DECAY) or PAPER_WEIGHT_DECAY)

    def loss_fn(self, module: pl.LightningModule | None) -> Callable:
        return cross_entropy_loss

    # ---- the run ---------------------------------------------------------------------------------
    def run(
        self,
        module: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        out_root: str | Path,
        epoch: int,
        optimizers: Sequence[torch.optim.Optimizer] = (),
        loggers: Sequence[Any] = (),
        step: int | None = None,
        stem: str | None = None,
    ) -> AnalysisResult:
        """Run on all ranks inside `restore_state`; write and log from rank 0; return the result."""
        rank, world = rank_and_world()
        out_dir = Path(out_root) / "analysis" / self.name
        context = AnalysisContext(
            epoch=epoch,
            out_dir=out_dir,
            rank=rank,
            world_size=world,
            module=module,
            datamodule=datamodule,
            seed=self.seed,
        )
        model = module.model if hasattr(module, "model") else module
        start = time.perf_counter()
        with restore_state(module, optimizers=list(optimizers)):
            batches = self.analysis_batches(datamodule, module)
            device = next(model.parameters()).device
            batches = [to_device(b, device) for b in batches]
            with torch.autocast(device_type=device.type, enabled=False):
                result = self.compute(model, self.loss_fn(module), batches, context)
        if rank == 0:
            stem = stem or f"epoch={epoch:03d}"
            figures = self.plot(result, context)
            seconds = round(time.perf_counter() - start, 3)
            summary = {
                "analysis": self.name,
                "epoch": epoch,
                "seconds": seconds,
                "world_size": world,
                "scalars": result.scalars,
                **result.summary,
            }
            paths = write_results(out_dir, stem, summary, result.arrays, figures)
            self._log(loggers, result, paths, step if step is not None else epoch)
        return result

    def _log(self, loggers: Sequence[Any], result: AnalysisResult, paths: dict, step: int) -> None:
        metrics = {f"{self.name}/{k}": float(v) for k, v in result.scalars.items()}
        for logger in loggers:
            try:  # a logger failure (e.g. W&B) must never kill training
                if metrics:
                    logger.log_metrics(metrics, step=step)
                if self.log_images and hasattr(logger, "log_image"):
                    for kind, path in paths.items():
                        if kind.startswith("png:"):
                            key = f"{self.name}/{kind[4:] or 'figure'}"
                            logger.log_image(key=key, images=[str(path)], step=step)
            except Exception as err:  # noqa: BLE001
                log.warning("logging %s results to %s failed: %s", self.name, type(logger).__name__, err)

    # ---- Lightning hooks ------------------------------------------------------------------------
    def _maybe_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, when: str, epoch: int) -> None:
        if trainer.sanity_checking or (when, epoch) in self._done:
            return
        self._done.add((when, epoch))
        try:
            self.run(
                pl_module,
                trainer.datamodule,
                trainer.default_root_dir,
                epoch=epoch,
                optimizers=trainer.optimizers,
                loggers=trainer.loggers,
                step=trainer.global_step,
            )
        except Exception:  # an analysis must not cost the training run (restore_state already ran)
            if self.strict or trainer.world_size > 1:
                raise  # under DDP the other ranks may wait in a collective: a clean crash beats a hang
            log.exception(
                "analysis %r failed at epoch %d; training continues (strict=False)", self.name, epoch
            )
            self.failures.append(epoch)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "fit_start" in self.at:
            self._maybe_run(trainer, pl_module, "fit_start", 0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1  # epochs completed
        warmup = float(getattr(pl_module, "warmup_epochs", 0) or 0)
        at_warmup_end = "warmup_end" in self.at and warmup > 0 and epoch == math.ceil(warmup)
        periodic = bool(self.every_n_epochs) and epoch % self.every_n_epochs == 0
        if at_warmup_end or periodic:
            self._maybe_run(trainer, pl_module, "epoch", epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # "fit_end" runs here, not in on_fit_end: Lightning calls on_fit_end after the strategy's
        # teardown, which has moved the model to the CPU (and left DDP), so a GPU run would analyse
        # on the CPU and collectives would fail.
        if "fit_end" in self.at:
            self._maybe_run(trainer, pl_module, "epoch", trainer.current_epoch)
