"""Loss-landscape callbacks: `landscape` (random filter-normalised 1-D/2-D slices) and `trajectory`
(PCA of the weights saved during training, with the landscape drawn on those axes and a polar view).

Both are declarations (schedule, data, snapshots, logging) around `analysis.landscape.run.run` and
`analysis.trajectory.run`, which hold the maths; `landscape` logs the sharpness summary
(`edge_increase`, `max_increase`: `alternet_pl.analysis.sharpness`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.landscape.directions import Ignore, Norm
from alternet_pl.analysis.landscape.run import LandscapeOptions
from alternet_pl.analysis.landscape.run import run as landscape_run
from alternet_pl.analysis.options import WeightDecayTerm, check_choice
from alternet_pl.analysis.params import trainable_parameters
from alternet_pl.analysis.records import LandscapeRecord, TrajectoryRecord
from alternet_pl.analysis.trajectory import TrajectoryOptions, flatten_trainable
from alternet_pl.analysis.trajectory import run as trajectory_run
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext
from alternet_pl.errors import InputError
from alternet_pl.plots import landscape as plots
from alternet_pl.runs import analysis_dir, result_stem
from alternet_pl.training.checkpoints import load_checkpoint

__all__ = ["LandscapeCallback", "TrajectoryCallback"]


class LandscapeCallback(AnalysisCallback):
    """Loss (and accuracy) on a `steps`^`dims` grid over [-span, span] along random directions.

    Defaults are the clean loss on validation batches with filter-normalised directions; the
    paper's plot (augmented training batches with mixup, NLL + 0.05 * sum_p ||theta_p||_2, the
    official normalisation) is `configs/analysis/paper.yaml`.

    Args:
        steps: grid points per direction (odd keeps theta itself on the grid).
        span: the grid covers [-span, span] in units of the normalised directions.
        dims: 1 (a curve) or 2 (a surface).
        norm, ignore: direction normalisation and which tensors stay fixed; see
            `alternet_pl.analysis.landscape.random_directions`.
        weight_decay: a weight-decay term added to the plotted loss (coefficient 0: the clean loss).
        data, schedule, log_images, strict: see `AnalysisCallback`.
    """

    name = "landscape"
    run_analysis = staticmethod(landscape_run)

    def __init__(
        self,
        steps: int = 21,
        span: float = 1.0,
        dims: Literal[1, 2] = 2,
        norm: Norm = "filter",
        ignore: Ignore = "biasbn",
        weight_decay: WeightDecayTerm = WeightDecayTerm(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.options = LandscapeOptions(
            steps=int(steps),
            span=float(span),
            dims=dims,
            norm=norm,
            ignore=ignore,
            weight_decay=weight_decay,
            seed=self.data.seed,
        )

    def plot(self, record: LandscapeRecord, context: AnalysisContext) -> dict[str, Any]:
        x, loss, acc = record.coords, np.asarray(record.loss), np.asarray(record.acc)
        if record.dims == 1:
            return {
                "": plots.curve(x, loss, acc, title=f"loss along a random direction (epoch {context.epoch})")
            }
        mid = int(np.argmin(np.abs(x)))
        return {
            "": plots.contour(x, x, loss, title=f"loss (epoch {context.epoch})"),
            "heatmap": plots.heatmap(x, x, loss),
            "surface": plots.surface(x, x, loss),
            "curve": plots.curve(x, loss[:, mid], acc[:, mid], title="slice along direction 1"),
        }


class TrajectoryCallback(AnalysisCallback):
    """Keeps flat fp32 weights every `snapshot_every_n_epochs` (and at fit start), then at the analysis
    point projects theta_t - theta_final on its top-2 PCA directions and evaluates the loss there.

    Args:
        snapshot_every_n_epochs: epochs between snapshots.
        store: "memory" (CPU arrays) or "disk" (`.npy` under `<root>/analysis/trajectory/weights/`).
        checkpoints: Lightning checkpoint files to use as snapshots instead (for `analyze`).
        steps, margin: grid points per axis and padding around the path (fraction of its extent).
        data, schedule, log_images, strict: see `AnalysisCallback`.
    """

    name = "trajectory"

    def __init__(
        self,
        snapshot_every_n_epochs: int = 1,
        store: Literal["memory", "disk"] = "memory",
        checkpoints: list[str] | None = None,
        steps: int = 21,
        margin: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_choice("TrajectoryCallback", "store", store, ("memory", "disk"))
        if snapshot_every_n_epochs < 1:
            raise InputError(
                f"TrajectoryCallback: snapshot_every_n_epochs={snapshot_every_n_epochs}; use >= 1"
            )
        self.options = TrajectoryOptions(steps=int(steps), margin=float(margin))
        self.snapshot_every, self.store = snapshot_every_n_epochs, store
        self.checkpoints = list(checkpoints or [])
        self.snapshots: dict[int, np.ndarray | Path] = {}
        self._dir: Path | None = None
        self._rank = 0

    # ---- recording ------------------------------------------------------------------------------
    def snapshot(self, model: nn.Module, epoch: int) -> None:
        """Record the current trainable weights as the snapshot of `epoch` (rank 0 only: DDP keeps
        the weights equal on every rank)."""
        if self._rank != 0:
            return
        flat = flatten_trainable(model)
        if self.store == "disk":
            path = Path(self._dir or "trajectory_weights") / f"{result_stem(epoch)}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, flat)
            self.snapshots[epoch] = path
        else:
            self.snapshots[epoch] = flat

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rank = trainer.global_rank
        self._dir = analysis_dir(trainer.default_root_dir, self.name) / "weights"
        if trainer.current_epoch not in self.snapshots:
            self.snapshot(getattr(pl_module, "model", pl_module), trainer.current_epoch)
        super().on_fit_start(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.snapshot_every == 0 and not trainer.sanity_checking:
            self.snapshot(getattr(pl_module, "model", pl_module), epoch)
        super().on_train_epoch_end(trainer, pl_module)

    def settings(self) -> dict[str, Any]:
        """The options and data, plus where the snapshots come from (they change the result too)."""
        return {
            **super().settings(),
            "snapshot_every_n_epochs": self.snapshot_every,
            "store": self.store,
            "checkpoints": list(self.checkpoints),
        }

    def state_dict(self) -> dict[str, Any]:
        """The base's state plus the snapshots, so they survive a resumed fit: disk snapshots by path,
        memory ones as tensors (a checkpoint stays `weights_only`-loadable)."""
        disk = {e: str(p) for e, p in self.snapshots.items() if isinstance(p, Path)}
        memory = {
            e: torch.from_numpy(np.asarray(p)) for e, p in self.snapshots.items() if not isinstance(p, Path)
        }
        return {**super().state_dict(), "disk": disk, "memory": memory}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for epoch, path in state_dict.get("disk", {}).items():
            if Path(path).exists():
                self.snapshots.setdefault(int(epoch), Path(path))
        for epoch, flat in state_dict.get("memory", {}).items():
            self.snapshots.setdefault(int(epoch), flat.numpy())

    def _snapshots(self, model: nn.Module) -> tuple[list[int], list[np.ndarray]]:
        """(epochs, flat weights) of the snapshots: the checkpoints when given, else those recorded."""
        if self.checkpoints:
            return list(range(len(self.checkpoints))), [
                self._from_checkpoint(model, p) for p in self.checkpoints
            ]
        epochs = sorted(self.snapshots)
        snaps = [self.snapshots[e] for e in epochs]
        return epochs, [np.load(s, mmap_mode="r") if isinstance(s, Path) else s for s in snaps]

    def _from_checkpoint(self, model: nn.Module, path: str) -> np.ndarray:
        state = load_checkpoint(path)
        state = state.get("state_dict", state)
        rows, missing, bad = [], [], []
        for name, p in trainable_parameters(model).items():
            t = state.get(f"model.{name}", state.get(name))
            if t is None:
                missing.append(name)
            elif t.shape != p.shape:
                bad.append(f"{name}: {tuple(t.shape)} vs {tuple(p.shape)}")
            else:
                rows.append(t.reshape(-1).float())
        if missing or bad:
            raise InputError(
                f"TrajectoryCallback: checkpoint {path} does not fit this model (another architecture?): "
                f"missing {missing[:5]}, shape mismatches {bad[:5]}"
            )
        return torch.cat(rows).numpy()

    # ---- analysis -------------------------------------------------------------------------------
    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> TrajectoryRecord:
        epochs, snapshots = self._snapshots(model) if context.rank == 0 else ([], [])
        options = context.options if context.options is not None else self.options
        return trajectory_run(model, loss_fn, batches, options, snapshots=snapshots, epochs=epochs)

    def plot(self, record: TrajectoryRecord, context: AnalysisContext) -> dict[str, Any]:
        return {
            "": plots.trajectory(record.x, record.y, record.loss, record.path, record.explained),
            "polar": plots.polar_view(record.angle, record.radius),
        }
