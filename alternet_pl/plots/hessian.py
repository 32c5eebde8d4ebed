"""Hessian figures: the SLQ eigenvalue density, the per-mini-batch eigenvalue spectrum, block-wise bars.

Inputs are the plain arrays `HessianCallback` writes to its npz, so the report can redraw them.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from alternet_pl.analysis.hessian import smoothed_density
from alternet_pl.plots import KIND_STYLE, kind_color


def density_figure(
    nodes: np.ndarray,
    weights: np.ndarray,
    top_eig: float | None = None,
    min_eig: float | None = None,
    sigma: float | None = None,
    title: str = "Hessian eigenvalue density (SLQ)",
) -> Figure:
    """Gaussian-smoothed SLQ density on a log scale, with the extreme eigenvalues marked."""
    nodes, weights = np.asarray(nodes, dtype=float), np.asarray(weights, dtype=float)
    lo, hi = float(nodes.min()), float(nodes.max())
    width = max(hi - lo, 1e-12)
    sigma = sigma or 0.01 * width
    grid = np.linspace(lo - 0.05 * width - 3 * sigma, hi + 0.05 * width + 3 * sigma, 1000)
    dens = smoothed_density(nodes, weights, grid, sigma).numpy()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(grid, np.maximum(dens, 1e-12), color="k", lw=1)
    for value, label, color in ((top_eig, "top", "tab:red"), (min_eig, "min", "tab:blue")):
        if value is not None and np.isfinite(value):
            ax.axvline(value, color=color, ls="--", lw=1, label=f"{label} eig {value:.3g}")
    ax.set(xlabel="eigenvalue", ylabel="density", title=title, ylim=(1e-8, None))
    if top_eig is not None or min_eig is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def spectrum_figure(
    spectrum: np.ndarray, bins: int = 30, title: str = "per-batch Hessian eigenvalues"
) -> Figure:
    """Histogram of the per-mini-batch extreme eigenvalues (the paper's max-eigenvalue spectrum)."""
    values = np.asarray(spectrum, dtype=float).reshape(-1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(values, bins=bins, density=True, color="tab:gray", edgecolor="k", lw=0.5)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set(xlabel="eigenvalue", ylabel="density", title=title)
    fig.tight_layout()
    return fig


def blockwise_figure(
    names: Sequence[str], kinds: Sequence[str], top: np.ndarray, bottom: np.ndarray | None = None
) -> Figure:
    """Top (and min) eigenvalue of each block's own Hessian, coloured by block kind."""
    x = np.arange(len(names))
    colors = [kind_color(k) for k in kinds]
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(names) + 1), 3.5))
    ax.bar(x, np.asarray(top, dtype=float), color=colors)
    if bottom is not None:
        ax.bar(x, np.asarray(bottom, dtype=float), color=colors, alpha=0.5)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set(ylabel="eigenvalue", title="block-wise Hessian eigenvalues")
    handles = [
        Patch(color=kind_color(k), label=KIND_STYLE[k][2]) for k in dict.fromkeys(kinds) if k in KIND_STYLE
    ]
    if handles:
        ax.legend(handles=handles, fontsize=8)
    fig.tight_layout()
    return fig
