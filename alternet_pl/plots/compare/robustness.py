"""Robustness figures: accuracy under frequency-band noise (Fig. 2b) and corruptions with mCE."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from alternet_pl.plots.compare.common import (
    ComparisonFigure,
    _fmt,
    _thin_ticks,
)
from alternet_pl.plots.rundata import Run

__all__ = ["corruption_figure", "freq_noise_figure"]


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
