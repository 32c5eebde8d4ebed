"""Optimisation trajectories (Li et al. 2018, Sec. 7): PCA of theta_t - theta_final over saved weights.

Snapshots are flat fp32 vectors over the trainable parameters (`flatten_trainable`). The top-2
principal directions come from the SVD of M = [theta_t - theta_final]_t (rows; not mean-centred by
default, so the final point sits at the origin of the plane, as in Li et al.'s projection). M is
never copied to float64 whole: the T x T Gram matrix M M^T is accumulated in float64 chunks and
M = U S V^T follows from its eigendecomposition, so P (tens of millions) x T (tens) stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.params import trainable_parameters
from alternet_pl.errors import InputError

__all__ = ["flatten_trainable", "pca_directions", "polar"]


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
