"""Training figures: curves of every run and the build-up curve (Fig. 11)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from alternet_pl.plots import model_color
from alternet_pl.plots.compare.common import (
    ComparisonFigure,
    _fmt,
    _percent,
)
from alternet_pl.plots.rundata import Run

__all__ = ["buildup_figure", "training_curves_figure"]


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
