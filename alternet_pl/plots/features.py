"""Figures of the feature analyses (Fourier, variance, lesion, frequency noise, corruptions).

Inputs are plain lists/arrays as stored in the result files, so `report` can redraw them without
torch. Block kinds share one colour code in every figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from alternet_pl.plots import KIND_STYLE

__all__ = [
    "kind_markers",
    "load_freq_noise_runs",
    "plot_by_depth",
    "plot_corruption",
    "plot_fourier",
    "plot_freq_noise",
    "scatter_by_kind",
]


def kind_markers(
    ax,
    depths: Sequence[float],
    values: Sequence[float],
    kinds: Sequence[str],
    line_color: str = "0.75",
    line_alpha: float | None = None,
    size: float = 28,
) -> None:
    """A thin line through the points and a marker per point in its block kind's style (`KIND_STYLE`)."""
    ax.plot(depths, values, color=line_color, lw=1, alpha=line_alpha, zorder=1)
    for kind in dict.fromkeys(kinds):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        color, marker, label = KIND_STYLE.get(kind, ("0.3", "o", kind))
        ax.scatter(
            [depths[i] for i in idx],
            [values[i] for i in idx],
            c=color,
            marker=marker,
            label=label,
            zorder=2,
            s=size,
        )


def scatter_by_kind(ax, depths: Sequence[float], values: Sequence[float], kinds: Sequence[str]) -> None:
    kind_markers(ax, depths, values, kinds)
    ax.set_xlabel("Normalized depth")
    ax.set_xlim(-0.02, 1.02)
    ax.legend(frameon=False, fontsize=8)


def plot_fourier(
    names: Sequence[str], kinds: Sequence[str], depths: Sequence[float], curves: Sequence[Sequence[float]]
):
    """Left: delta log amplitude curves per layer over 0..pi (colour = depth). Right: the highest
    frequency value against normalised depth, coloured by block kind (paper Fig. 2a / Fig. 8)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1, 1.6]})
    cmap = plt.get_cmap("plasma_r")
    for curve, d in zip(curves, depths):
        ax1.plot(np.linspace(0, 1, len(curve)), curve, color=cmap(d), lw=1.2)
    ax1.set_xlabel("Frequency (x pi)")
    ax1.set_ylabel(r"$\Delta$ Log amplitude")
    ax1.set_xlim(0, 1)
    scatter_by_kind(ax2, depths, [c[-1] for c in curves], kinds)
    ax2.set_ylabel(r"$\Delta$ Log amplitude at $\pi$")
    fig.tight_layout()
    return fig


def plot_by_depth(
    values: Sequence[float], kinds: Sequence[str], depths: Sequence[float], ylabel: str, logy: bool = False
):
    """One value per layer against normalised depth, coloured by block kind (variance, lesion drop)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    scatter_by_kind(ax, depths, values, kinds)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    fig.tight_layout()
    return fig


def plot_freq_noise(runs: Sequence[tuple[str, Sequence[float], Sequence[float]]]):
    """Accuracy change against noise frequency, one line per (label, freqs in units of pi, delta acc)."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for label, freqs, delta in runs:
        ax.plot(freqs, 100 * np.asarray(delta), marker="o", label=label)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("Noise frequency (x pi)")
    ax.set_ylabel(r"$\Delta$ Accuracy (%)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def load_freq_noise_runs(paths: Sequence[str | Path], labels: Sequence[str] | None = None) -> list:
    """(label, freqs, delta) from several `freq_noise` result files.

    Default label: "<experiment>/<version>" of a `runs/<experiment>/<version>/analysis/freq_noise/*.json`.
    """
    from alternet_pl.analysis.records import FreqNoiseRecord

    runs = []
    for k, p in enumerate(paths):
        record = FreqNoiseRecord.from_files(p)
        parents = Path(p).resolve().parents
        label = labels[k] if labels else f"{parents[3].name}/{parents[2].name}"
        runs.append((label, record.freqs, record.delta))
    return runs


def plot_corruption(
    corruptions: Sequence[str], severities: Sequence[int], metrics: Mapping[str, Mapping], key: str = "acc"
):
    """Heatmap of one metric (acc / nll / ece) per corruption (rows) and severity (columns);
    `metrics[corruption][str(severity)][key]` as in `CorruptionRecord`."""
    table = np.array([[metrics[c][str(s)][key] for s in severities] for c in corruptions])
    fig, ax = plt.subplots(figsize=(1.2 * len(severities) + 3, 0.35 * len(corruptions) + 1.5))
    im = ax.imshow(table, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(severities)), [str(s) for s in severities])
    ax.set_yticks(range(len(corruptions)), corruptions)
    ax.set_xlabel("Severity")
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            ax.text(j, i, f"{table[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, ax=ax, label=key)
    fig.tight_layout()
    return fig
