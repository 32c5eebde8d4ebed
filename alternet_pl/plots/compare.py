"""The paper's comparison figures, one function per figure, drawn from several runs at once.

Each function takes `Run`s (see `rundata`) and returns a `Figure` record (the matplotlib figure, what
the paper shows there and what these runs show, computed from the same data) or None when no run has
the data. Models keep their family colour (`MODEL_STYLE`), block kinds their `KIND_STYLE`, and
panels meant to be compared share one scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.cm import ScalarMappable
from matplotlib.ticker import MaxNLocator

from alternet_pl.analysis.sharpness import grid_sharpness
from alternet_pl.plots import KIND_STYLE, model_color, model_family, model_label
from alternet_pl.plots.rundata import Run

__all__ = [
    "ComparisonFigure",
    "FIGURES",
    "buildup_figure",
    "corruption_figure",
    "depth_figure",
    "freq_noise_figure",
    "hessian_spectrum_figure",
    "landscape_figure",
    "shared_norm",
    "training_curves_figure",
    "trajectory_figure",
]


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
    rises = [(label, float(g["edge"])) for _, label, _, g in grids]
    flat = min(rises, key=lambda lr: lr[1])
    observed = (
        "Loss rise from the centre to the grid's edge: "
        + ", ".join(f"{lab} {rise:.3g}" for lab, rise in rises)
        + (f"; {flat[0]} is the flattest" if len(rises) > 1 else "")
        + f". Shared colour scale {norm.vmin:.3g}-{norm.vmax:.3g}"
        + (" (log)." if isinstance(norm, mcolors.LogNorm) else ".")
    )
    paper = (
        "Fig. 1a: ViT's landscape is flatter than ResNet's around the optimum (MSAs flatten the loss; "
        "the paper plots NLL + weight decay on augmented training data)."
    )
    return ComparisonFigure("fig1a_loss_landscapes", "Loss landscapes and 1-D slices", paper, observed, fig)


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


# ---- Fig. 2a / 9 / 12: per-layer values against depth ----------------------------------------------
_DEPTH = {
    "fourier": (
        "hf",
        r"$\Delta$ log amplitude at $\pi$",
        "hf_change",
        False,
        "fig2a_fourier_by_depth",
        "Fourier: high-frequency amplitude by depth",
        "Fig. 2a / 8: the high-frequency log amplitude of feature maps falls after MSA blocks and rises "
        "after Conv blocks (MSAs are low-pass filters, Convs high-pass).",
    ),
    "variance": (
        "variance",
        "feature-map variance (log)",
        "var_change",
        True,
        "fig9_variance_by_depth",
        "Feature-map variance by depth",
        "Fig. 9: MSAs reduce the feature-map variance, Convs increase it; the variance piles up towards "
        "the end of each ResNet stage and is pulled down by the MSAs of AlterNet.",
    ),
    "lesion": (
        "drop",
        "accuracy drop when removed",
        "drop",
        False,
        "fig12_lesion_by_depth",
        "Lesion study: accuracy drop per removed block",
        "Fig. 12: removing an MSA block near the end of a stage costs more accuracy than removing a Conv "
        "block; early MSAs matter little.",
    ),
}


def _scatter_kinds(ax, depth, values, kinds, line_color: str) -> None:
    ax.plot(depth, values, color=line_color, lw=1, alpha=0.5, zorder=1)
    for kind in dict.fromkeys(kinds):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        colour, marker, label = KIND_STYLE.get(kind, ("0.3", "o", kind))
        ax.scatter(
            [depth[i] for i in idx],
            [values[i] for i in idx],
            c=colour,
            marker=marker,
            s=26,
            label=label,
            zorder=2,
        )


def depth_figure(runs: Sequence[Run], analysis: str) -> ComparisonFigure | None:
    """One panel per run of an analysis's per-layer value against normalised depth (markers by block
    kind, the line in the model's colour), all panels on one y scale. `analysis`: fourier, variance
    or lesion."""
    key, ylabel, change, logy, stem, title, paper = _DEPTH[analysis]
    found = []
    for run in runs:
        rec = run.record(analysis)
        if rec is not None and len(getattr(rec, key)):
            found.append((run, np.asarray(rec.depth, float), np.asarray(getattr(rec, key), float), rec.kinds))
    if not found:
        return None
    fig, axes = _panels(len(found), sharey=True)
    for ax, (run, depth, values, kinds) in zip(axes, found):
        _scatter_kinds(ax, depth, values, kinds, run.color)
        if logy:
            ax.set_yscale("log")
        if analysis != "variance":
            ax.axhline(0.0, color="0.6", lw=0.7)
        ax.set_xlabel("normalised depth")
        ax.set_xlim(-0.03, 1.03)
        _title(ax, run)
        _thin_ticks(ax, 4)
    axes[0].set_ylabel(ylabel)
    handles = {h.get_label(): h for ax in axes for h in ax.collections}
    axes[-1].legend(handles.values(), handles.keys(), frameon=False, fontsize=7, loc="best")
    fig.tight_layout()
    parts = []
    for run, _, _, _ in found:
        by_kind = [
            f"{KIND_STYLE.get(kind, ('', '', kind))[2]} {_fmt(run.scalar(analysis, f'{change}_{kind}'), 2)}"
            for kind in ("msa", "conv", "mlp")
            if run.scalar(analysis, f"{change}_{kind}") is not None
        ]
        parts.append(f"{run.model_label}: " + (", ".join(by_kind) or "no per-kind value"))
    what = {
        "fourier": "mean change of the high-frequency amplitude across a block",
        "variance": "mean log-ratio of the variance across a block",
        "lesion": "mean accuracy drop per removed block",
    }[analysis]
    observed = f"{what[0].upper() + what[1:]}: " + "; ".join(parts) + "."
    return ComparisonFigure(stem, title, paper, observed, fig)


# ---- Fig. 2b: frequency-noise robustness -----------------------------------------------------------
def freq_noise_figure(runs: Sequence[Run]) -> ComparisonFigure | None:
    """Accuracy change under band-limited noise against the band's frequency, one line per run."""
    found = [(run, s) for run in runs if (s := run.record("freq_noise")) is not None and s.freqs]
    if not found:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for run, s in found:
        ax.plot(
            s.freqs,
            100 * np.asarray(s.delta, float),
            "o-",
            color=run.color,
            ms=4,
            label=f"{run.model_label} ({run.label})",
        )
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set(
        xlabel=r"noise frequency ($\times\pi$)",
        ylabel=r"$\Delta$ accuracy (%)",
        title="Robustness to band-limited noise",
    )
    ax.legend(frameon=False, fontsize=7)
    _thin_ticks(ax, 5)
    fig.tight_layout()
    parts = []
    for run, s in found:
        d = 100 * np.asarray(s.delta, float)
        i = int(np.nanargmin(d))
        parts.append(f"{run.model_label} loses most at {s.freqs[i]:g}π ({d[i]:+.1f} points; eps {s.eps:g})")
    observed = "; ".join(parts) + "."
    paper = (
        "Fig. 2b: ViT is robust to high-frequency noise and ResNet to low-frequency noise (ViT loses about "
        "15 points at 0.3π, ResNet about 15 at 0.9π)."
    )
    return ComparisonFigure("fig2b_freq_noise", "Robustness to frequency-band noise", paper, observed, fig)


# ---- corruption robustness -------------------------------------------------------------------------
def _corruption_errors(record) -> dict[str, list[float]]:
    return {c: [float(e) for e in errs] for c, errs in record.errors.items()}


def corruption_figure(runs: Sequence[Run]) -> ComparisonFigure | None:
    """Mean accuracy over corruptions against severity per run, and each run's mCE against the first
    ResNet run (or the first run) when the runs share corruptions and severities."""
    found = [(run, s) for run in runs if (s := run.record("corruption")) is not None and s.metrics]
    if not found:
        return None
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.6, 3.5), gridspec_kw={"width_ratios": [1.4, 1]})
    for run, s in found:
        sev = [int(v) for v in s.severities]
        acc = [np.mean([s.metrics[c][str(v)]["acc"] for c in s.metrics]) for v in sev]
        clean = s.clean.get("acc")
        xs, ys = ([0, *sev], [clean, *acc]) if clean is not None else (sev, acc)
        ax.plot(xs, 100 * np.asarray(ys, float), "o-", color=run.color, ms=4, label=run.model_label)
    ax.set(xlabel="severity (0: clean)", ylabel="accuracy (%), mean over corruptions", title="Corrupted data")
    ax.legend(frameon=False, fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    base_run, base = next(((r, s) for r, s in found if r.family == "resnet"), found[0])
    base_err = _corruption_errors(base)
    names, values, notes = [], [], []
    for run, s in found:
        err = _corruption_errors(s)
        if set(err) <= set(base_err) and all(len(err[c]) == len(base_err[c]) for c in err):
            ce = [np.sum(err[c]) / max(np.sum(base_err[c]), 1e-12) for c in err]
            value = 100 * float(np.mean(ce))
        else:
            value = np.nan
            notes.append(f"{run.label}: other corruptions or severities than the baseline, no mCE")
        names.append(run.model_label)
        values.append(value)
        bx.bar(len(names) - 1, value, color=run.color)
    bx.axhline(100, color="0.5", lw=0.8, ls="--")
    bx.set_xticks(range(len(names)), names, fontsize=8)
    bx.set(ylabel="mCE (%)", title=f"mCE vs {base_run.model_label}")
    fig.tight_layout()
    mean_err = [100 * float(s.mean_corruption_error) for _, s in found]
    observed = (
        ", ".join(
            f"{n}: mCE {_fmt(v, 3)}%, mean error {_fmt(e, 3)}%" for n, v, e in zip(names, values, mean_err)
        )
        + f" (baseline {base_run.label})."
        + (" " + "; ".join(notes) if notes else "")
    )
    paper = (
        "Tab. / Fig. on CIFAR-100-C: ViT and AlterNet are more robust to common corruptions (lower mCE) "
        "than ResNet; AlterNet the most."
    )
    return ComparisonFigure("fig_corruption", "Corruption robustness and mCE", paper, observed, fig)


# ---- Fig. 11: the build-up curve -------------------------------------------------------------------
def buildup_figure(runs: Sequence[Run]) -> ComparisonFigure | None:
    """Best validation accuracy against the number of MSA blocks, for runs that state it in their
    config (`msa_per_stage` or `layout`: experiments/buildup/); needs two such runs."""
    pts = []
    for run in runs:
        n, acc = run.num_msas, run.best_metric("val/acc1")
        if n is not None and acc is not None:
            pts.append((n, 100 * acc, run))
    if len({n for n, _, _ in pts}) < 2:
        return None
    pts.sort(key=lambda p: p[0])
    fig, ax = plt.subplots(figsize=(5.0, 3.5))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=model_color("alternet"), lw=1.2)
    for n, acc, run in pts:
        ax.plot(n, acc, "o", color=run.color, ms=6)
    ax.set(
        xlabel="number of MSA blocks (Convs replaced from the end of the stages)",
        ylabel="best val accuracy (%)",
        title="Build-up: ResNet -> AlterNet",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    best = max(pts, key=lambda p: p[1])
    observed = (
        ", ".join(f"{n} MSA: {acc:.1f}%" for n, acc, _ in pts)
        + f"; best with {best[0]} MSA ({best[2].label})."
    )
    paper = (
        "Fig. 11: replacing Conv blocks by MSAs from the end of the stages first raises accuracy (up to "
        "AlterNet); replacing too many, at the start of the stages, lowers it again."
    )
    return ComparisonFigure(
        "fig11_buildup", "Build-up: accuracy against the number of MSAs", paper, observed, fig
    )


# ---- training curves -------------------------------------------------------------------------------
def _train_loss_key(run: Run) -> str | None:
    return next((k for k in ("train/loss_epoch", "train/loss") if run.curve(k)[1].size), None)


def training_curves_figure(runs: Sequence[Run]) -> ComparisonFigure | None:
    """Training loss and validation accuracy against epochs, one colour per model."""
    found = [run for run in runs if run.curve("val/acc1")[1].size or _train_loss_key(run)]
    if not found:
        return None
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.6, 3.4))
    seen: dict[str, int] = {}
    for run in found:
        repeat = seen[run.color] = seen.get(run.color, -1) + 1  # runs of one family: other line styles
        style = dict(
            color=run.color,
            marker="o",
            ms=3,
            ls=("-", "--", ":", "-.")[repeat % 4],
            label=f"{run.model_label} ({run.label})",
        )
        if key := _train_loss_key(run):
            ax.plot(*run.curve(key), **style)
        x, y = run.curve("val/acc1")
        if y.size:
            bx.plot(x, 100 * y, **style)
    ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    bx.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Validation accuracy")
    for a in (ax, bx):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    bx.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    observed = (
        "; ".join(
            f"{r.model_label} ({r.label}): best val acc {_fmt(_percent(r.best_metric('val/acc1')))}%"
            for r in found
        )
        + "."
    )
    paper = (
        "Training curves (Tab. 1 context): on CIFAR-100 AlterNet reaches the highest accuracy, ResNet next, "
        "ViT the lowest."
    )
    return ComparisonFigure("fig_training_curves", "Training curves", paper, observed, fig)


def _depth(analysis: str):
    return lambda runs: depth_figure(runs, analysis)


#: the report's figures in order: (analysis they need or "" for metrics, drawing function)
FIGURES = (
    ("", training_curves_figure),
    ("hessian", hessian_spectrum_figure),
    ("trajectory", trajectory_figure),
    ("fourier", _depth("fourier")),
    ("variance", _depth("variance")),
    ("freq_noise", freq_noise_figure),
    ("corruption", corruption_figure),
    ("lesion", _depth("lesion")),
    ("", buildup_figure),
)


def official_label(path: str | Path) -> str:
    """A name for an official CSV grid: its file stem without `_losslandscape`."""
    return Path(path).stem.replace("_losslandscape", "")
