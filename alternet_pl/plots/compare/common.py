"""What the comparison figures share: the `ComparisonFigure` record, one colour scale for several
grids, panel layouts and number formats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.cm import ScalarMappable
from matplotlib.ticker import MaxNLocator

from alternet_pl.plots.rundata import Run

__all__ = ["CMAP", "ComparisonFigure", "shared_norm"]


@dataclass
class ComparisonFigure:
    """One figure of the report: file stem, title, the paper's finding, this data's finding."""

    name: str
    title: str
    paper: str
    observed: str
    figure: plt.Figure


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}g}"


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _panels(n: int, width: float = 3.4, height: float = 3.0, **kwargs):
    fig, axes = plt.subplots(1, n, figsize=(width * n + 0.6, height), squeeze=False, **kwargs)
    return fig, list(axes[0])


def _thin_ticks(ax, nbins: int = 4) -> None:
    """Few enough ticks that neighbouring panels' labels never overlap."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=nbins))
    if ax.get_yscale() == "linear":
        ax.yaxis.set_major_locator(MaxNLocator(nbins=nbins + 1))


def _title(ax, run: Run) -> None:
    ax.set_title(f"{run.model_label}\n{run.label}", fontsize=9, color=run.color)


def shared_norm(grids: Sequence[np.ndarray]) -> mcolors.Normalize:
    """One colour scale for several grids: logarithmic when every value is positive and the range
    spans more than a factor of 10 (a flat ViT basin beside a steep ResNet one), else linear."""
    finite = np.concatenate([np.asarray(g, float)[np.isfinite(g)].ravel() for g in grids])
    if finite.size == 0:
        return mcolors.Normalize(0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if lo > 0 and hi / lo > 10:
        return mcolors.LogNorm(lo, hi)
    return mcolors.Normalize(lo, hi if hi > lo else lo + 1e-12)


CMAP = "viridis"


def _grid_row(n: int, height: float, wspace: float = 0.3):
    """A figure with n equal panels, a colour bar, a gap and one wider panel on the right."""
    fig = plt.figure(figsize=((3.0 + wspace) * n + 4.6, height))
    gs = fig.add_gridspec(1, n + 3, width_ratios=[1] * n + [0.06, 0.55, 1.25], wspace=wspace)
    return fig, gs


def _colorbar(fig, cax, norm: mcolors.Normalize, label: str) -> None:
    """One colour bar for panels sharing `norm`, with the scale's own ticks (log ticks for LogNorm)."""
    log = isinstance(norm, mcolors.LogNorm)
    label += " (log scale)" if log else ""
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), cax=cax, label=label)
    bar.solids.set_rasterized(False)  # vector PDFs (matplotlib rasterises bars of 50+ colours)


def _levels(norm: mcolors.Normalize, n: int = 16) -> np.ndarray:
    if isinstance(norm, mcolors.LogNorm):
        return np.geomspace(norm.vmin, norm.vmax, n)
    return np.linspace(norm.vmin, norm.vmax, n)
