"""Curvature figures: Hessian max-eigenvalue spectra (Fig. 1c), loss landscapes (Fig. 1a) and
training trajectories (Fig. 1b)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.ticker import MaxNLocator

from alternet_pl.analysis.sharpness import grid_sharpness
from alternet_pl.plots import model_color, model_family, model_label
from alternet_pl.plots.compare.common import (
    CMAP,
    ComparisonFigure,
    _colorbar,
    _fmt,
    _grid_row,
    _levels,
    _thin_ticks,
    _title,
    shared_norm,
)
from alternet_pl.plots.rundata import Run

__all__ = ["hessian_spectrum_figure", "landscape_figure", "trajectory_figure"]


# ---- Fig. 1c: Hessian max-eigenvalue spectra -------------------------------------------------------
def hessian_spectrum_figure(runs: Sequence[Run]) -> ComparisonFigure | None:
    """Histogram of the per-mini-batch extreme Hessian eigenvalues of each run on shared bins."""
    found, batches = [], []
    for run in runs:
        rec = run.record("hessian")
        if rec is not None and rec.spectrum is not None and np.isfinite(rec.spectrum).any():
            spectrum = np.asarray(rec.spectrum, float).reshape(len(rec.spectrum), -1)
            values = spectrum.ravel()
            found.append((run, values[np.isfinite(values)]))
            batches.append((int((spectrum < 0).any(axis=1).sum()), spectrum.shape[0]))
    if not found:
        return None
    allv = np.concatenate([v for _, v in found])
    lo, hi = float(min(allv.min(), 0.0)), float(max(allv.max(), 0.0))
    pad = 0.05 * (hi - lo or 1.0)
    bins = np.linspace(lo - pad, hi + pad, 41)
    fig, (ax, ax_rug) = plt.subplots(
        2, 1, figsize=(6.2, 4.0), sharex=True, gridspec_kw={"height_ratios": [4, 1], "hspace": 0.05}
    )
    for i, (run, values) in enumerate(found):
        ax.hist(values, bins=bins, density=True, histtype="stepfilled", alpha=0.25, color=run.color)
        ax.hist(
            values,
            bins=bins,
            density=True,
            histtype="step",
            lw=1.5,
            color=run.color,
            label=f"{run.model_label} ({run.label}, {values.size} eigenvalues)",
        )
        ax_rug.plot(values, np.full(values.size, i), "|", color=run.color, ms=9)
    for a in (ax, ax_rug):
        a.axvline(0.0, color="k", lw=0.8)
        a.axvspan(bins[0], 0.0, color="0.92", zorder=0)
    ax.set_ylabel("density")
    ax.set_title("Hessian max-eigenvalue spectra (per mini-batch)")
    ax.legend(frameon=False, fontsize=7)
    ax_rug.set_yticks(range(len(found)), [r.model_label for r, _ in found], fontsize=7)
    ax_rug.set_ylim(-0.7, len(found) - 0.3)
    ax_rug.set_xlabel("Hessian eigenvalue (shaded: negative)")
    ax_rug.xaxis.set_major_locator(MaxNLocator(nbins=6))
    most_neg = min(found, key=lambda rv: rv[1].min())
    largest = max(found, key=lambda rv: rv[1].max())
    parts = [
        f"{r.model_label}: {v.min():.3g} to {v.max():.3g}, negative eigenvalues in {neg} of {n} batches"
        for (r, v), (neg, n) in zip(found, batches)
    ]
    observed = f"{'; '.join(parts)}."
    if len(found) > 1:
        observed += (
            f" {most_neg[0].model_label}'s min eigenvalue {most_neg[1].min():.3g} is the most negative; "
            f"{largest[0].model_label}'s top eigenvalue {largest[1].max():.3g} is the largest."
        )
    paper = (
        "Fig. 1c: ResNet's per-batch top eigenvalues are large (about 200-800); ViT's are far smaller "
        "(about 0-100) but include negative ones (down to about -100): MSAs flatten the loss, and ViT's "
        "loss is non-convex on small data."
    )
    return ComparisonFigure("fig1c_hessian_spectra", "Hessian max-eigenvalue spectra", paper, observed, fig)


# ---- Fig. 1a: loss landscapes ----------------------------------------------------------------------
def _official_edge_increase(loss: np.ndarray) -> float:
    """An official CSV grid's edge increase (no record holds it): `grid_sharpness` around its centre cell."""
    loss = np.asarray(loss, float)
    return grid_sharpness(loss, float(loss[loss.shape[0] // 2, loss.shape[1] // 2]))[0]


def landscape_figure(
    runs: Sequence[Run], official: dict[str, dict[str, np.ndarray]] | None = None
) -> ComparisonFigure | None:
    """Filled contours of every 2-D landscape on one shared colour scale, and the 1-D slices through
    the centre along direction 1 on one axis (official CSV grids dashed)."""
    grids: list[tuple[str, str, str, dict[str, np.ndarray]]] = []  # (title, label, colour, grid)
    for run in runs:
        rec = run.record("landscape")
        if rec is not None and rec.dims == 2:
            grid = {"x": rec.coords, "y": rec.coords, "loss": rec.loss, "edge": rec.edge_increase}
            grids.append((f"{run.model_label}\n{run.label}", run.model_label, run.color, grid))
    for name, grid in (official or {}).items():
        grid = {**grid, "edge": _official_edge_increase(grid["loss"])}
        colour = model_color(name) if model_family(name) else "0.3"
        grids.append((f"official\n{name}", f"official {model_label(name)}", colour, grid))
    if not grids:
        return None
    norm = shared_norm([g["loss"] for *_, g in grids])
    n = len(grids)
    fig, gs = _grid_row(n, 3.3)
    for k, (title, _, colour, g) in enumerate(grids):
        ax = fig.add_subplot(gs[0, k])
        z = np.ma.masked_invalid(np.asarray(g["loss"], float)).T
        if isinstance(norm, mcolors.LogNorm):
            z = np.ma.masked_less_equal(z, 0)
        ax.contourf(g["x"], g["y"], z, levels=_levels(norm), norm=norm, cmap=CMAP, extend="both")
        ax.plot([0], [0], "w+", ms=8)
        ax.set_title(title, fontsize=8, color=colour)
        ax.set_xlabel("direction 1")
        same_axes = k > 0 and np.array_equal(g["y"], grids[0][3]["y"])
        if same_axes:
            ax.tick_params(labelleft=False)
        elif k == 0:
            ax.set_ylabel("direction 2")
        _thin_ticks(ax, 3)
    _colorbar(fig, fig.add_subplot(gs[0, n]), norm, "loss")
    ax1 = fig.add_subplot(gs[0, n + 2])
    for title, label, colour, g in grids:
        loss = np.asarray(g["loss"], float)
        mid = int(np.argmin(np.abs(np.asarray(g["y"], float))))
        ls = "--" if title.startswith("official") else "-"
        ax1.plot(g["x"], loss[:, mid], ls, color=colour, marker="o", ms=2.5, label=label)
    if isinstance(norm, mcolors.LogNorm):
        ax1.set_yscale("log")
    ax1.set(xlabel="direction 1 (slice at direction 2 = 0)", ylabel="loss", title="1-D slices")
    ax1.title.set_fontsize(9)
    ax1.legend(frameon=False, fontsize=7)
    _thin_ticks(ax1, 4)
    observed = _landscape_observed([(label, float(g["edge"])) for _, label, _, g in grids], norm)
    return ComparisonFigure(
        "fig1a_loss_landscapes", "Loss landscapes and 1-D slices", _LANDSCAPE_PAPER, observed, fig
    )


_LANDSCAPE_PAPER = (
    "Fig. 1a: ViT's landscape is flatter than ResNet's around the optimum (MSAs flatten the loss; "
    "the paper plots NLL + weight decay on augmented training data)."
)


def _landscape_observed(rises: list[tuple[str, float]], norm: mcolors.Normalize) -> str:
    """What the landscapes show: each one's edge increase (from its record), the flattest, the scale."""
    flat = min(rises, key=lambda lr: lr[1])
    return (
        "Loss rise from the centre to the grid's edge: "
        + ", ".join(f"{lab} {rise:.3g}" for lab, rise in rises)
        + (f"; {flat[0]} is the flattest" if len(rises) > 1 else "")
        + f". Shared colour scale {norm.vmin:.3g}-{norm.vmax:.3g}"
        + (" (log)." if isinstance(norm, mcolors.LogNorm) else ".")
    )


# ---- Fig. 1b: trajectories -------------------------------------------------------------------------
def trajectory_figure(runs: Sequence[Run]) -> ComparisonFigure | None:
    """Each run's loss on its PCA plane with the training path, and every path in polar coordinates."""
    found = [(run, a) for run in runs if (a := run.record("trajectory")) is not None]
    if not found:
        return None
    norm = shared_norm([a.loss for _, a in found])
    n = len(found)
    fig, gs = _grid_row(n, 3.4, wspace=0.65)  # each panel has its own PC axes: room for their labels
    for k, (run, a) in enumerate(found):
        ax = fig.add_subplot(gs[0, k])
        z = np.ma.masked_invalid(np.asarray(a.loss, float)).T
        ax.contourf(a.x, a.y, z, levels=_levels(norm), norm=norm, cmap=CMAP, extend="both")
        path = np.asarray(a.path, float)
        ax.plot(path[:, 0], path[:, 1], ".-", color="w", lw=1.2, ms=4)
        ax.plot(path[0, 0], path[0, 1], "o", color=run.color, mec="w", ms=6)
        ax.plot(0, 0, "*", color="w", ms=8)
        ex = np.asarray(a.explained, float)
        ax.set_xlabel(f"PC1 ({100 * ex[0]:.0f}%)")
        ax.set_ylabel(f"PC2 ({100 * ex[1]:.0f}%)")
        _title(ax, run)
        _thin_ticks(ax, 3)
    _colorbar(fig, fig.add_subplot(gs[0, n]), norm, "loss")
    pax = fig.add_subplot(gs[0, n + 2], projection="polar")
    for run, a in found:
        pax.plot(a.angle, a.radius, ".-", color=run.color, lw=1.2, ms=4, label=run.model_label)
        pax.plot(a.angle[:1], a.radius[:1], "o", color=run.color, ms=5)
    pax.set_title("polar view (r: distance to final weights)", fontsize=8)
    pax.tick_params(labelsize=6)
    pax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.05, 1.0))
    parts = []
    for run, a in found:
        ex = np.asarray(a.explained, float)
        length = a.path_length
        parts.append(
            f"{run.model_label}: PC1+PC2 explain {100 * (ex[0] + ex[1]):.0f}%, path length {_fmt(length)}"
        )
    observed = "; ".join(parts) + ". Circle: the first snapshot; star: the final weights."
    paper = (
        "Fig. 1b: the training trajectories on the top-2 PCA plane of the weights, in polar coordinates, "
        "to compare how each architecture travels to its optimum over the landscape."
    )
    return ComparisonFigure("fig1b_trajectories", "Training trajectories", paper, observed, fig)
