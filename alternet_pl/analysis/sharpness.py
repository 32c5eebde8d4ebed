"""The landscape's sharpness summary, the one definition (numpy only: the report uses it too).

With L0 the loss at theta (the grid centre):
  * edge increase: the mean of L - L0 over the grid's boundary cells (|a| = span or |b| = span);
  * max increase: the max of L - L0 over the whole grid (the worst point of the neighbourhood).
"""

from __future__ import annotations

import numpy as np

__all__ = ["edge_mask", "grid_sharpness"]


def edge_mask(shape: tuple[int, ...]) -> np.ndarray:
    """True on the boundary cells of a grid of `shape` (first or last index along any axis)."""
    edge = np.zeros(shape, dtype=bool)
    for k, size in enumerate(shape):
        idx: list = [slice(None)] * len(shape)
        idx[k] = [0, size - 1]
        edge[tuple(idx)] = True
    return edge


def grid_sharpness(loss: np.ndarray, center: float) -> tuple[float, float]:
    """(edge increase, max increase) of a loss grid around `center`; NaN cells are left out (NaN
    when no cell is finite)."""
    loss = np.asarray(loss, dtype=float)
    edge = edge_mask(loss.shape)
    with np.errstate(all="ignore"):
        edge_inc = float(np.nanmean(loss[edge] - center)) if np.isfinite(loss[edge]).any() else float("nan")
        max_inc = float(np.nanmax(loss - center)) if np.isfinite(loss).any() else float("nan")
    return edge_inc, max_inc
