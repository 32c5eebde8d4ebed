"""Figures of the spread over seeds, for scales that train each model with several seeds.

`landscape_spread_figure`: per model family, the 1-D slice through the centre of every seed's 2-D
loss landscape (each seed its own random directions), their mean and min-max band, and the edge rise
of each seed as points: how much of a flatness contrast is the direction draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from alternet_pl.plots import model_color, model_label
from alternet_pl.plots.compare import ComparisonFigure
from alternet_pl.plots.findings import by_family

__all__ = ["landscape_spread_figure"]


def _slices(seeds: dict) -> tuple[np.ndarray, np.ndarray, list[float]] | None:
    coords, rows, edges = None, [], []
    for run in seeds.values():
        rec = run.record("landscape")
        if rec.dims != 2:
            continue
        loss = np.asarray(rec.loss, float)
        mid = loss.shape[1] // 2
        if coords is None:
            coords = np.asarray(rec.coords, float)
        if loss.shape[0] != coords.size:
            continue
        rows.append(loss[:, mid])
        edges.append(float(rec.edge_increase))
    return None if coords is None or len(rows) < 2 else (coords, np.array(rows), edges)


def landscape_spread_figure(runs: Sequence) -> ComparisonFigure | None:
    """Mean and min-max band of the landscapes' centre slices over seeds, per family (needs two or
    more seeds of one family); None when no family has two."""
    found = {f: s for f, seeds in by_family(runs, "landscape").items() if (s := _slices(seeds))}
    if not found:
        return None
    fig, (ax, ax_edge) = plt.subplots(
        1, 2, figsize=(9.0, 3.4), gridspec_kw={"width_ratios": [2.2, 1], "wspace": 0.35}
    )
    parts = []
    for k, (family, (coords, rows, edges)) in enumerate(found.items()):
        colour, label = model_color(family), model_label(family)
        ax.fill_between(coords, rows.min(0), rows.max(0), color=colour, alpha=0.2, lw=0)
        ax.plot(coords, rows.mean(0), "-", color=colour, lw=1.6, label=f"{label} (mean of {len(rows)} seeds)")
        for row in rows:
            ax.plot(coords, row, ":", color=colour, lw=0.7)
        ax_edge.plot(np.full(len(edges), k), edges, "o", color=colour, ms=5)
        ax_edge.errorbar(
            k + 0.2,
            np.mean(edges),
            yerr=np.std(edges, ddof=1) / np.sqrt(len(edges)),
            fmt="s",
            color=colour,
            ms=4,
            capsize=3,
        )
        parts.append(
            f"{label}: edge rise {np.mean(edges):.3g} (seeds {', '.join(f'{e:.3g}' for e in edges)})"
        )
    ax.set(
        xlabel="direction 1 (slice at direction 2 = 0)",
        ylabel="loss",
        title="Centre slices: mean, min-max band",
    )
    ax.title.set_fontsize(9)
    ax.legend(frameon=False, fontsize=7)
    if all((rows > 0).all() for _, rows, _ in found.values()):
        ax.set_yscale("log")
    ax_edge.set_xticks(range(len(found)), [model_label(f) for f in found], fontsize=8)
    ax_edge.set_xlim(-0.5, len(found) - 0.3)
    ax_edge.set(ylabel="loss rise centre -> edge", title="Edge rise per seed\n(square: mean ± s.e.)")
    ax_edge.title.set_fontsize(9)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.86)
    paper = (
        "Fig. 1a draws one landscape per model from one pair of random directions; the flatness contrast "
        "is meant to hold for any draw."
    )
    return ComparisonFigure(
        "fig1a_landscape_spread",
        "Loss landscapes: spread over seeds and directions",
        paper,
        "; ".join(parts) + ".",
        fig,
    )
