"""Optimisation trajectories (Li et al. 2018, Sec. 7): PCA of theta_t - theta_final over saved weights.

Snapshots are flat fp32 vectors over the trainable parameters (`flatten_trainable`). The top-2
principal directions come from the SVD of M = [theta_t - theta_final]_t (rows; not mean-centred by
default, so the final point sits at the origin of the plane, as in Li et al.'s projection). M is
never copied to float64 whole: the T x T Gram matrix M M^T is accumulated in float64 chunks and
M = U S V^T follows from its eigendecomposition, so P (tens of millions) x T (tens) stays cheap.
`run` is the whole analysis: the plane of the snapshots and the loss over it (`TrajectoryRecord`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.dist import broadcast_object, broadcast_tensor, rank_and_world
from alternet_pl.analysis.landscape import directions_from_flat, evaluate_grid
from alternet_pl.analysis.params import trainable_parameters
from alternet_pl.analysis.records import TrajectoryRecord
from alternet_pl.errors import InputError

__all__ = ["TrajectoryOptions", "flatten_trainable", "pca_directions", "polar", "run"]


def flatten_trainable(model: nn.Module) -> np.ndarray:
    """The trainable parameters concatenated in `named_parameters` order, as float32 on the CPU."""
    params = trainable_parameters(model)
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in params.values()]).numpy()


def pca_directions(
    snapshots: Sequence[np.ndarray] | np.ndarray,
    final: np.ndarray,
    n: int = 2,
    center: bool = False,
    chunk: int = 1 << 22,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-`n` principal directions of theta_t - final.

    Returns (directions (n, P) float64 unit rows, coords (T, n) = projections of theta_t - final onto
    them, explained (n,) fraction of the (centred, when `center`) sum of squares). Each direction's
    sign is chosen so that the first snapshot has a coordinate >= 0 (SVD signs are arbitrary).
    """
    final = np.asarray(final).reshape(-1)
    rows = [np.asarray(s).reshape(-1) for s in snapshots]
    if len(rows) < n:
        raise InputError(
            f"pca_directions: {len(rows)} snapshots cannot give {n} directions; save more epochs"
        )
    bad = [i for i, r in enumerate(rows) if r.shape != final.shape]
    if bad:
        raise InputError(
            f"pca_directions: snapshots {bad} have a different length than the final weights "
            f"({final.size}): they come from another architecture"
        )
    size = final.size
    mean = np.zeros(size) if not center else np.mean([r - final for r in rows], axis=0)
    gram = np.zeros((len(rows), len(rows)))
    for start in range(0, size, chunk):
        block = np.stack([r[start : start + chunk] for r in rows]).astype(np.float64)
        block -= final[start : start + chunk] + mean[start : start + chunk]
        gram += block @ block.T
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(evals)[::-1][:n]
    sing = np.sqrt(np.clip(evals[order], 0.0, None))
    if np.any(sing <= 1e-12 * max(sing[0], 1e-300)):
        raise InputError("pca_directions: the snapshots span fewer than n directions (identical weights?)")
    u = evecs[:, order]
    dirs = np.zeros((n, size))
    for start in range(0, size, chunk):
        block = np.stack([r[start : start + chunk] for r in rows]).astype(np.float64)
        block -= final[start : start + chunk] + mean[start : start + chunk]
        dirs[:, start : start + chunk] = (u.T @ block) / sing[:, None]
    coords = np.stack([(r.astype(np.float64) - final) @ dirs.T for r in rows])
    flip = np.where(coords[0] < 0, -1.0, 1.0)
    explained = evals[order] / max(float(np.clip(evals, 0, None).sum()), 1e-300)
    return dirs * flip[:, None], coords * flip[None, :], explained


def polar(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(angle in radians, radius) of trajectory points in the PCA plane (the polar view)."""
    coords = np.asarray(coords, dtype=np.float64)
    return np.arctan2(coords[:, 1], coords[:, 0]), np.hypot(coords[:, 0], coords[:, 1])


@dataclass(frozen=True)
class TrajectoryOptions:
    """Everything of the trajectory analysis that changes its result besides the snapshots.

    Args:
        steps: grid points per PCA axis.
        margin: padding around the path on each axis (fraction of its extent).
    """

    steps: int = 21
    margin: float = 0.2

    def __post_init__(self) -> None:
        if self.steps < 2 or self.margin < 0:
            raise InputError(
                f"TrajectoryOptions: steps={self.steps}, margin={self.margin}; need steps >= 2, margin >= 0"
            )


def _plane(snapshots: Sequence[np.ndarray], final: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`pca_directions` of the snapshots that differ from the final weights (at least 2 needed)."""
    distinct = [not np.array_equal(s, final) for s in snapshots]  # the final snapshot adds no direction
    if sum(distinct) < 2:
        raise InputError(
            f"TrajectoryCallback: {sum(distinct)} weight snapshot(s) besides the final weights; the PCA "
            "needs at least 2: attach the callback to a fit of >= 2 epochs or pass checkpoints=[...]"
        )
    return pca_directions(snapshots, final)


def run(
    model: nn.Module,
    loss_fn: Callable,
    batches: list,
    options: TrajectoryOptions,
    *,
    snapshots: Sequence[np.ndarray],
    epochs: Sequence[int],
) -> TrajectoryRecord:
    """The path of `snapshots` (flat weights at `epochs`) on its top-2 PCA plane around the model's
    weights, and the loss over that plane.

    Under torch.distributed only rank 0 needs the snapshots: its PCA is broadcast (every rank raises
    together when it fails) and the grid is split over ranks. Raises `InputError` for fewer than two
    snapshots that differ from the final weights.
    """
    final = flatten_trainable(model)
    rank, _ = rank_and_world()
    outcome: tuple = ("ok",)
    if rank == 0:  # only rank 0 holds snapshots (DDP keeps the weights equal on all ranks)
        try:
            vecs, path, explained = _plane(snapshots, final)
            outcome = ("ok", list(epochs), path, explained)
        except ValueError as err:
            outcome = ("error", str(err))
    outcome = broadcast_object(outcome)
    if outcome[0] == "error":
        raise InputError(outcome[1])
    _, epochs, path, explained = outcome
    device = next(model.parameters()).device
    vecs = broadcast_tensor(
        torch.from_numpy(vecs) if rank == 0 else None, (2, final.size), torch.float64, device
    )
    vecs = vecs.cpu().numpy() if isinstance(vecs, torch.Tensor) else vecs
    lo, hi = np.minimum(path.min(0), 0.0), np.maximum(path.max(0), 0.0)
    pad = options.margin * np.maximum(hi - lo, 1e-12)
    axes = [np.linspace(lo[k] - pad[k], hi[k] + pad[k], options.steps) for k in range(2)]
    grid = evaluate_grid(model, loss_fn, batches, directions_from_flat(model, vecs), axes)
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
