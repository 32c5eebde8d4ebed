"""Loss-landscape callbacks: `landscape` (random filter-normalised 1-D/2-D slices) and `trajectory`
(PCA of the weights saved during training, with the landscape drawn on those axes and a polar view).

Sharpness summary logged by `landscape` (L0 = loss at theta, the grid centre):
  * `edge_increase`: mean of L - L0 over the grid's boundary cells (|a| = span or |b| = span);
  * `max_increase`: max of L - L0 over the whole grid (the worst point of the neighbourhood).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.dist import broadcast_object, broadcast_tensor
from alternet_pl.analysis.landscape import (
    IGNORES,
    NORMS,
    directions_from_flat,
    evaluate_grid,
    random_directions,
)
from alternet_pl.analysis.params import trainable_parameters
from alternet_pl.analysis.records import LandscapeRecord, TrajectoryRecord
from alternet_pl.analysis.trajectory import flatten_trainable, pca_directions, polar
from alternet_pl.analysis.weight_decay import WeightDecayLoss
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext
from alternet_pl.callbacks.options import WeightDecayTerm, check_choice
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

    def __init__(
        self,
        steps: int = 21,
        span: float = 1.0,
        dims: Literal[1, 2] = 2,
        norm: Literal["filter", "layer", "official", "none"] = "filter",
        ignore: Literal["biasbn", "none"] = "biasbn",
        weight_decay: WeightDecayTerm = WeightDecayTerm(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if dims not in (1, 2):
            raise InputError(f"LandscapeCallback: dims={dims}; choose 1 (curve) or 2 (surface)")
        if steps < 2:
            raise InputError(
                f"LandscapeCallback: steps={steps}; use at least 2 points per direction (e.g. 21)"
            )
        if not span > 0:
            raise InputError(f"LandscapeCallback: span={span}; use a positive half-width such as 1.0")
        check_choice("LandscapeCallback", "norm", norm, NORMS)
        check_choice("LandscapeCallback", "ignore", ignore, IGNORES)
        if weight_decay.form != "norm" and weight_decay.coefficient:
            raise InputError(
                f"LandscapeCallback: weight_decay.form={weight_decay.form!r}; the landscape adds the "
                "paper's term coefficient * sum_p ||theta_p||_2: use form 'norm'"
            )
        self.steps, self.span, self.dims = int(steps), float(span), int(dims)
        self.norm, self.ignore = norm, ignore
        self.weight_decay = weight_decay

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "steps": self.steps,
            "span": self.span,
            "dims": self.dims,
            "norm": self.norm,
            "ignore": self.ignore,
            "weight_decay": asdict(self.weight_decay),
        }

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> LandscapeRecord:
        wd = self.weight_decay.coefficient
        if wd:  # the paper's plotted loss: NLL + wd * sum_p ||theta_p||_2
            loss_fn = WeightDecayLoss(loss_fn, wd, self.weight_decay.form)
        seed = self.data.seed
        dirs = random_directions(model, n=self.dims, seed=seed, norm=self.norm, ignore=self.ignore)
        axis = np.linspace(-self.span, self.span, self.steps)
        grid = evaluate_grid(model, loss_fn, batches, dirs, [axis] * self.dims)
        if self.steps % 2:
            mid = (self.steps // 2,) * self.dims
            center, center_acc = float(grid.loss[mid]), float(grid.acc[mid])
        else:  # theta is not a grid point: one extra evaluation
            c = evaluate_grid(model, loss_fn, batches, dirs, [[0.0]] * self.dims, progress=False)
            center, center_acc = float(c.loss.item()), float(c.acc.item())
        loss = grid.loss
        edge = np.zeros(loss.shape, dtype=bool)
        for k in range(self.dims):
            idx = [slice(None)] * self.dims
            idx[k] = [0, self.steps - 1]
            edge[tuple(idx)] = True
        with np.errstate(all="ignore"):
            edge_inc = (
                float(np.nanmean(loss[edge] - center)) if np.isfinite(loss[edge]).any() else float("nan")
            )
            max_inc = float(np.nanmax(loss - center)) if np.isfinite(loss).any() else float("nan")
        return LandscapeRecord(
            coords=axis,
            loss=loss,
            nll=grid.nll,
            acc=grid.acc,
            l2=None if grid.penalty is None else grid.penalty / wd,  # sum_p ||theta_p||, the CSV's l2
            loss_stderr=grid.loss_stderr,
            center_loss=center,
            center_acc=center_acc,
            edge_increase=edge_inc,
            max_increase=max_inc,
            num_samples=sum(int(b[1].shape[0]) for b in batches),
            nonfinite_cells=[list(map(float, c)) for c in grid.nonfinite_cells],
            notes=list(grid.notes),
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
        if snapshot_every_n_epochs < 1 or steps < 2 or margin < 0:
            raise InputError("TrajectoryCallback: need snapshot_every_n_epochs >= 1, steps >= 2, margin >= 0")
        self.snapshot_every, self.store, self.checkpoints = (
            snapshot_every_n_epochs,
            store,
            list(checkpoints or []),
        )
        self.steps, self.margin = int(steps), float(margin)
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
        return {
            **super().settings(),
            "snapshot_every_n_epochs": self.snapshot_every,
            "store": self.store,
            "checkpoints": list(self.checkpoints),
            "steps": self.steps,
            "margin": self.margin,
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

    def _pca(
        self, model: nn.Module, final: np.ndarray
    ) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
        """(epochs, 2 PCA directions, path coordinates, explained ratios) from the snapshots."""
        if self.checkpoints:
            epochs = list(range(len(self.checkpoints)))
            snaps = [self._from_checkpoint(model, p) for p in self.checkpoints]
        else:
            epochs = sorted(self.snapshots)
            snaps = [
                np.load(s, mmap_mode="r") if isinstance(s, Path) else s
                for s in (self.snapshots[e] for e in epochs)
            ]
        distinct = [not np.array_equal(s, final) for s in snaps]  # the final snapshot adds no direction
        if sum(distinct) < 2:
            raise InputError(
                f"TrajectoryCallback: {sum(distinct)} weight snapshot(s) besides the final weights; the PCA "
                "needs at least 2: attach the callback to a fit of >= 2 epochs or pass checkpoints=[...]"
            )
        vecs, path, explained = pca_directions(snaps, final)
        return epochs, vecs, path, explained

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
        final = flatten_trainable(model)
        outcome: tuple = ("ok",)
        if context.rank == 0:  # only rank 0 holds snapshots (DDP keeps the weights equal on all ranks)
            try:
                epochs, vecs, path, explained = self._pca(model, final)
                outcome = ("ok", epochs, path, explained)
            except ValueError as err:
                outcome = ("error", str(err))
        outcome = broadcast_object(outcome)  # every rank raises together: no rank left in a collective
        if outcome[0] == "error":
            raise InputError(outcome[1])
        _, epochs, path, explained = outcome
        device = next(model.parameters()).device
        vecs = broadcast_tensor(
            torch.from_numpy(vecs) if context.rank == 0 else None, (2, final.size), torch.float64, device
        )
        vecs = vecs.cpu().numpy() if isinstance(vecs, torch.Tensor) else vecs
        dirs = directions_from_flat(model, vecs)
        lo, hi = np.minimum(path.min(0), 0.0), np.maximum(path.max(0), 0.0)
        pad = self.margin * np.maximum(hi - lo, 1e-12)
        axes = [np.linspace(lo[k] - pad[k], hi[k] + pad[k], self.steps) for k in range(2)]
        grid = evaluate_grid(model, loss_fn, batches, dirs, axes)
        angle, radius = polar(path)
        return TrajectoryRecord(
            x=axes[0],
            y=axes[1],
            loss=grid.loss,
            acc=grid.acc,
            path=path,
            epochs=np.asarray(epochs),
            explained=np.asarray(explained),
            angle=np.asarray(angle),
            radius=np.asarray(radius),
            path_length=float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum()),
            nonfinite_cells=[list(map(float, c)) for c in grid.nonfinite_cells],
            notes=list(grid.notes),
        )

    def plot(self, record: TrajectoryRecord, context: AnalysisContext) -> dict[str, Any]:
        return {
            "": plots.trajectory(record.x, record.y, record.loss, record.path, record.explained),
            "polar": plots.polar_view(record.angle, record.radius),
        }
