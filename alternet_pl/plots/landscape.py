"""Loss-landscape figures (contour, heat map, 3-D surface, 1-D curve, trajectory, polar view) and a
reader for the official how-do-vits-work CSV grids. Grids follow `evaluate_grid`: z[i, j] is the value
at (x[i], y[j])."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from alternet_pl.errors import InputError

#: Column names of the official CSVs (written without a header; see the repo's losslandscape.ipynb).
OFFICIAL_COLUMNS = (
    "x",
    "y",
    "l1",
    "l2",
    "NLL",
    "Cutoff1",
    "Cutoff2",
    "Acc",
    "Acc-90",
    "Unc",
    "Unc-90",
    "IoU",
    "IoU-90",
    "Freq",
    "Freq-90",
    "Top-5",
    "Brier",
    "ECE",
    "ECSE",
)


def read_official_csv(path: str | Path, weight_decay: float = 0.05) -> dict[str, np.ndarray]:
    """Read an official `*_losslandscape.csv` into grids {x, y, nll, l2, loss, acc} on our convention.

    Rows are (x, y, l1, l2, NLL, ..., Acc, ...) with x varying fastest; a header row naming the columns
    is accepted too. "loss" = NLL + weight_decay * l2, the loss the paper plots (weight decay 0.05).
    """
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r]
    if not rows:
        raise InputError(f"read_official_csv: {path} is empty")
    names = list(OFFICIAL_COLUMNS)
    try:
        float(rows[0][0])
    except ValueError:
        names, rows = [c.strip() for c in rows[0]], rows[1:]
    need = ("x", "y", "l2", "NLL", "Acc")
    if any(c not in names for c in need) or any(len(r) < max(names.index(c) for c in need) + 1 for r in rows):
        raise InputError(
            f"read_official_csv: {path} lacks the columns {need} of the official layout {OFFICIAL_COLUMNS}"
        )
    table = {c: np.array([float(r[names.index(c)]) for r in rows]) for c in need}
    xs, ys = np.unique(table["x"].round(9)), np.unique(table["y"].round(9))
    if xs.size * ys.size != len(rows):
        raise InputError(f"read_official_csv: {len(rows)} rows do not form a full {xs.size}x{ys.size} grid")
    ix = np.searchsorted(xs, table["x"].round(9))
    iy = np.searchsorted(ys, table["y"].round(9))
    out: dict[str, np.ndarray] = {"x": xs, "y": ys}
    for key, col in (("nll", "NLL"), ("l2", "l2"), ("acc", "Acc")):
        grid = np.full((xs.size, ys.size), np.nan)
        grid[ix, iy] = table[col]
        out[key] = grid
    out["loss"] = out["nll"] + weight_decay * out["l2"]
    return out


def _finite_levels(z: np.ndarray, n: int = 20) -> np.ndarray | int:
    finite = z[np.isfinite(z)]
    if finite.size == 0 or finite.min() == finite.max():
        return n
    return np.linspace(finite.min(), finite.max(), n)


def contour(x: np.ndarray, y: np.ndarray, z: np.ndarray, title: str = "loss", filled: bool = False) -> Figure:
    """Contour lines (or filled contours) of z over the (x, y) plane, the centre marked."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    draw = ax.contourf if filled else ax.contour
    cs = draw(x, y, np.ma.masked_invalid(z).T, levels=_finite_levels(z), cmap="viridis")
    fig.colorbar(cs, ax=ax)
    ax.plot([0], [0], "k+", ms=10)
    ax.set(xlabel="direction 1", ylabel="direction 2", title=title)
    return fig


def heatmap(x: np.ndarray, y: np.ndarray, z: np.ndarray, title: str = "loss") -> Figure:
    """Filled heat map of z (NaN cells left blank)."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.pcolormesh(x, y, np.ma.masked_invalid(z).T, shading="nearest", cmap="magma")
    fig.colorbar(im, ax=ax)
    ax.set(xlabel="direction 1", ylabel="direction 2", title=title)
    return fig


def surface(x: np.ndarray, y: np.ndarray, z: np.ndarray, title: str = "loss") -> Figure:
    """3-D surface of z, as the paper's Fig. 1a."""
    fig = plt.figure(figsize=(5, 4.5))
    ax = fig.add_subplot(projection="3d")
    xx, yy = np.meshgrid(x, y, indexing="ij")
    ax.plot_surface(xx, yy, np.ma.masked_invalid(z).filled(np.nan), cmap="plasma", linewidth=0)
    ax.view_init(elev=15, azim=15)
    ax.set(xlabel="direction 1", ylabel="direction 2", zlabel=title, title=title)
    return fig


def curve(x: np.ndarray, loss: np.ndarray, acc: np.ndarray | None = None, title: str = "1-D slice") -> Figure:
    """Loss (and accuracy on a twin axis) along one direction."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(x, loss, "C0-o", ms=3, label="loss")
    ax.set(xlabel="step along the direction", ylabel="loss", title=title)
    if acc is not None and np.isfinite(acc).any():
        ax2 = ax.twinx()
        ax2.plot(x, acc, "C1--", label="accuracy")
        ax2.set_ylabel("accuracy")
    return fig


def trajectory(x: np.ndarray, y: np.ndarray, z: np.ndarray, path: np.ndarray, explained=None) -> Figure:
    """The loss contours on the top-2 PCA axes with the training path (first point -> final at 0)."""
    fig = contour(x, y, z, title="trajectory on the PCA plane")
    ax = fig.axes[0]
    ax.plot(path[:, 0], path[:, 1], "r.-", lw=1)
    ax.plot(path[0, 0], path[0, 1], "ro", ms=5)
    if explained is not None:
        ax.set(xlabel=f"PC1 ({100 * explained[0]:.1f}%)", ylabel=f"PC2 ({100 * explained[1]:.1f}%)")
    return fig


def polar_view(angle: np.ndarray, radius: np.ndarray) -> Figure:
    """The trajectory in polar coordinates of the PCA plane (angle, distance to the final weights)."""
    fig = plt.figure(figsize=(4, 4))
    ax = fig.add_subplot(projection="polar")
    ax.plot(angle, radius, "r.-", lw=1)
    ax.plot(angle[:1], radius[:1], "ro", ms=5)
    ax.set_title("trajectory (polar, PCA plane)")
    return fig


def side_by_side(grids: dict[str, dict[str, np.ndarray]], key: str = "loss") -> Figure:
    """Filled contours of grids ({label: {"x", "y", key}}) on one row, e.g. ours beside the official."""
    fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids), 3.8), squeeze=False)
    for ax, (label, g) in zip(axes[0], grids.items()):
        cs = ax.contourf(g["x"], g["y"], np.ma.masked_invalid(g[key]).T, levels=_finite_levels(g[key]))
        fig.colorbar(cs, ax=ax)
        ax.set_title(label)
    return fig
