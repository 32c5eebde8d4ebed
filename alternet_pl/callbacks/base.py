"""`AnalysisCallback`: schedule, data, rank handling, state restore, writing and logging for analyses.

A concrete analysis subclasses it, sets `name`, and implements `compute` (all ranks, pure analysis
calls, returns a typed record from `alternet_pl.analysis.records`) and optionally `plot` (rank 0
only, matplotlib figures from that record) and `settings` (its options, written beside the result).
The same object serves `python -m alternet_pl.analyze` through `run(...)` with no Trainer.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import torch
from torch import nn

from alternet_pl.analysis.dist import rank_and_world
from alternet_pl.analysis.files import write_figure
from alternet_pl.analysis.loss import cross_entropy_loss
from alternet_pl.analysis.options import resolve_weight_decay
from alternet_pl.analysis.records import AnalysisRecord
from alternet_pl.analysis.state import restore_state, to_device
from alternet_pl.callbacks.options import AnalysisData, Schedule
from alternet_pl.loggers.tables import log_analysis_record
from alternet_pl.runs import analysis_dir, figure_name, result_stem, write_error_record
from alternet_pl.training.recipe import recipe_info

__all__ = [
    "AnalysisCallback",
    "AnalysisList",
    "AnalysisContext",
    "AnalysisFailure",
    "NonFiniteResult",
]

log = logging.getLogger(__name__)

#: what a run is keyed by in the callback's state: "fit_start" (epoch 0) or "epoch" (epochs completed)
RunPoint = Literal["fit_start", "epoch"]


class NonFiniteResult(ValueError):
    """An analysis met NaN / Inf (in the weights or in its own numbers): no numbers are written."""

    #: the `kind` of its error record (`alternet_pl.runs.write_error_record`)
    error_kind: ClassVar[str] = "nonfinite"


def _check_finite(model: nn.Module) -> None:
    """Refuse to write numbers computed from NaN/Inf weights (a diverged model); NaN inside a result
    can be a deliberate "not applicable" (e.g. a change across a resolution change), so only the
    weights are checked."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteResult(
            f"the weights hold NaN/Inf ({len(bad)} tensors, e.g. {bad[0]}); no numbers written"
        )


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
    #: the callback's `options` with what follows training resolved (`coefficient: train`)
    options: Any = None


@dataclass(frozen=True)
class AnalysisFailure:
    """An analysis that raised during training (kept in the callback's state)."""

    when: RunPoint
    epoch: int
    error: str


class AnalysisCallback(pl.Callback):
    """Common arguments of every analysis callback.

    Args:
        data: which fixed batches the analysis runs on (split, augmentation, number, size, seed).
        schedule: when it runs during `fit` (`at` points and/or every n epochs).
        log_images: log figures to the Trainer's loggers (files are always written).
        strict: re-raise an analysis error during training; by default (one process) it is logged
            with its traceback, recorded in `failures`, and training goes on, since the model is
            restored either way. Under DDP an error is always re-raised: other ranks could be
            waiting in a collective.
    """

    #: the analysis's name in `alternet_pl.registry` (its folder, `--analysis` name, scalar prefix)
    name: ClassVar[str] = ""
    #: the analysis's frozen options (all that changes its result), for analyses written as
    #: `run(model, loss_fn, batches, options)`; None for callbacks that keep their options themselves
    options: Any = None
    #: the analysis's ``run(model, loss_fn, batches, options) -> record`` (what the default `compute` calls)
    run_analysis: ClassVar[Callable[..., Any] | None] = None

    def __init__(
        self,
        data: AnalysisData = AnalysisData(),
        schedule: Schedule = Schedule(),
        log_images: bool = True,
        strict: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(data, AnalysisData) or not isinstance(schedule, Schedule):
            raise TypeError(
                f"{type(self).__name__}: data must be an AnalysisData and schedule a Schedule "
                f"(got {type(data).__name__}, {type(schedule).__name__})"
            )
        self.data = data
        self.schedule = schedule
        self.log_images = log_images
        self.strict = strict
        self.done: set[tuple[RunPoint, int]] = set()
        self.failures: list[AnalysisFailure] = []

    # ---- to implement -------------------------------------------------------------------------
    def compute(
        self,
        model: nn.Module,
        loss_fn: Callable,
        batches: list,
        context: AnalysisContext,
    ) -> AnalysisRecord:
        """Run the analysis on every rank and return the (rank-identical) record: by default
        `run_analysis` with `options` as they run on this module (`context.options`)."""
        if type(self).run_analysis is None:
            raise NotImplementedError(f"{type(self).__name__}: set run_analysis or override compute")
        options = context.options if context.options is not None else self.run_options(context.module)
        return type(self).run_analysis(model, loss_fn, batches, options)

    def plot(self, record: Any, context: AnalysisContext) -> dict[str, Any]:
        """Matplotlib figures from a record, {key: figure}; key "" is the main figure. Rank 0 only."""
        return {}

    def settings(self) -> dict[str, Any]:
        """The options that produced a result (written into its record, part of `state_key`): the
        data, and `options` whole when the analysis has them (subclasses without add theirs)."""
        return {"data": asdict(self.data), **(asdict(self.options) if self.options is not None else {})}

    def run_options(self, module: Any) -> Any:
        """`options` as they run on `module`: a weight-decay coefficient "train" becomes the training
        run's (`recipe_info(module).weight_decay`; from the run config's model section in `analyze`)."""
        if self.options is None:
            return None
        return resolve_weight_decay(self.options, recipe_info(module).weight_decay)

    def loss_fn(self, module: pl.LightningModule | None) -> Callable:
        """`loss_fn(model, batch) -> (mean loss, num samples, num correct)` of this analysis."""
        return cross_entropy_loss

    # ---- data -----------------------------------------------------------------------------------
    def analysis_batches(self, datamodule: pl.LightningDataModule, module: pl.LightningModule | None) -> list:
        """The same fixed list of `data.num_batches` batches on every rank (analyses shard it themselves).

        Raises:
            RuntimeError: the datamodule has no `analysis_batches` method.
        """
        if datamodule is None or not hasattr(datamodule, "analysis_batches"):
            raise RuntimeError(
                f"{type(self).__name__} needs a datamodule with `analysis_batches(...)` "
                "(every alternet_pl.data module has one)"
            )
        mixup = recipe_info(module).mixup_fn if self.data.augment else None
        return datamodule.analysis_batches(
            split=self.data.split,
            num_batches=self.data.num_batches,
            batch_size=self.data.batch_size,
            augment=self.data.augment,
            seed=self.data.seed,
            mixup_fn=mixup,
        )

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
    ) -> AnalysisRecord:
        """Run on all ranks inside `restore_state`; write and log from rank 0; return the record.

        Files: `<out_root>/analysis/<name>/<stem>.json|npz` (the record) and `<stem>[_<key>].png`.
        """
        rank, world = rank_and_world()
        out_dir = analysis_dir(out_root, self.name)
        context = AnalysisContext(
            epoch=epoch,
            out_dir=out_dir,
            rank=rank,
            world_size=world,
            module=module,
            datamodule=datamodule,
            seed=self.data.seed,
            options=self.run_options(module),
        )
        model = module.model if hasattr(module, "model") else module
        start = time.perf_counter()
        _check_finite(model)
        with restore_state(module, optimizers=list(optimizers)):
            batches = self.analysis_batches(datamodule, module)
            device = next(model.parameters()).device
            batches = [to_device(b, device) for b in batches]
            with torch.autocast(device_type=device.type, enabled=False):
                record = self.compute(model, self.loss_fn(module), batches, context)
        record = record.replace(
            epoch=epoch,
            seconds=round(time.perf_counter() - start, 3),
            world_size=world,
            # what ran: "train" resolved to the number it stood for
            settings={**self.settings(), **(asdict(context.options) if context.options is not None else {})},
        )
        if rank == 0:
            stem = stem or result_stem(epoch)
            paths = record.to_files(out_dir, stem)
            for key, figure in self.plot(record, context).items():
                paths[f"png:{key}"] = write_figure(out_dir / figure_name(stem, key), figure)
            self._log(loggers, record, paths, step if step is not None else epoch)
        return record

    def _log(self, loggers: Sequence[Any], record: AnalysisRecord, paths: dict, step: int) -> None:
        metrics = {f"{self.name}/{k}": float(v) for k, v in record.scalars().items()}
        for logger in loggers:
            try:  # a logger failure (e.g. W&B) must never kill training
                if metrics:
                    logger.log_metrics(metrics, step=step)
                if self.log_images and hasattr(logger, "log_image"):
                    for kind, path in paths.items():
                        if kind.startswith("png:"):
                            key = f"{self.name}/{kind[4:] or 'figure'}"
                            logger.log_image(key=key, images=[str(path)], step=step)
                log_analysis_record(logger, self.name, record, paths.get("npz"), step)
            except Exception as err:  # noqa: BLE001
                log.warning("logging %s results to %s failed: %s", self.name, type(logger).__name__, err)

    # ---- state (resume) ----------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        """The checkpoint slot of this callback: its class, settings and schedule, so that two analyses
        of one class (e.g. a 1-D and a 2-D landscape) keep separate states (Lightning refuses two
        stateful callbacks with one key) and a resumed fit with the same config finds its own."""
        return self._generate_state_key(settings=self.settings(), schedule=asdict(self.schedule))

    def state_dict(self) -> dict[str, Any]:
        """What already ran and what failed, as plain lists (a checkpoint stays `weights_only`-loadable):
        `{"done": [[when, epoch], ...], "failures": [{"when", "epoch", "error"}, ...]}`."""
        return {
            "done": [[when, epoch] for when, epoch in sorted(self.done)],
            "failures": [asdict(f) for f in self.failures],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = {(str(when), int(epoch)) for when, epoch in state_dict.get("done", [])}  # type: ignore[misc]
        self.failures = [AnalysisFailure(**f) for f in state_dict.get("failures", [])]

    # ---- Lightning hooks ------------------------------------------------------------------------
    def _maybe_run(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, when: RunPoint, epoch: int
    ) -> None:
        if trainer.sanity_checking or (when, epoch) in self.done:
            return
        self.done.add((when, epoch))
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
        except Exception as err:  # an analysis must not cost the training run (restore_state already ran)
            if trainer.is_global_zero:
                write_error_record(trainer.default_root_dir, self.name, result_stem(epoch), epoch, err)
            if self.strict or trainer.world_size > 1:
                raise  # under DDP the other ranks may wait in a collective: a clean crash beats a hang
            log.exception(
                "analysis %r failed at epoch %d; training continues (strict=False)", self.name, epoch
            )
            message = "".join(traceback.format_exception_only(type(err), err)).strip()
            self.failures.append(AnalysisFailure(when=when, epoch=epoch, error=message))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "fit_start" in self.schedule.at:
            self._maybe_run(trainer, pl_module, "fit_start", 0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1  # epochs completed
        warmup = float(recipe_info(pl_module).warmup_epochs or 0)
        at_warmup_end = "warmup_end" in self.schedule.at and warmup > 0 and epoch == math.ceil(warmup)
        every = self.schedule.every_n_epochs
        if at_warmup_end or (every and epoch % every == 0):
            self._maybe_run(trainer, pl_module, "epoch", epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # "fit_end" runs here, not in on_fit_end: Lightning calls on_fit_end after the strategy's
        # teardown, which has moved the model to the CPU (and left DDP), so a GPU run would analyse
        # on the CPU and collectives would fail.
        if "fit_end" in self.schedule.at:
            self._maybe_run(trainer, pl_module, "epoch", trainer.current_epoch)


#: the type of `fit`'s and `analyze`'s `analyses:` list (class_path + init_args entries)
AnalysisList = list[AnalysisCallback] | None
