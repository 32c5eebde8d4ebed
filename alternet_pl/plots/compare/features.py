"""Per-layer figures against depth: Fourier (Fig. 2a), feature-map variance (Fig. 9), lesions (Fig. 12)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from alternet_pl.plots import KIND_STYLE
from alternet_pl.plots.compare.common import (
    ComparisonFigure,
    _fmt,
    _panels,
    _thin_ticks,
    _title,
)
from alternet_pl.plots.features import kind_markers
from alternet_pl.plots.rundata import Run

__all__ = ["depth_figure", "fourier_figure", "lesion_figure", "variance_figure"]


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
        kind_markers(ax, depth, values, kinds, run.color, line_alpha=0.5, size=26)
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


def fourier_figure(runs: Sequence[Run]) -> ComparisonFigure | None:
    """Fig. 2a: the high-frequency amplitude of each run's feature maps against depth."""
    return depth_figure(runs, "fourier")


def variance_figure(runs: Sequence[Run]) -> ComparisonFigure | None:
    """Fig. 9: each run's feature-map variance against depth."""
    return depth_figure(runs, "variance")


def lesion_figure(runs: Sequence[Run]) -> ComparisonFigure | None:
    """Fig. 12: each run's accuracy drop per removed block against depth."""
    return depth_figure(runs, "lesion")
