"""The paper's comparison figures, one function per figure, drawn from several runs at once; one
module per figure family (curvature, features, robustness, training), `common` for what they share.

Each function takes `Run`s (see `rundata`) and returns a `ComparisonFigure` (the matplotlib figure,
what the paper shows there and what these runs show, computed from the same data) or None when no
run has the data. Models keep their family colour (`MODEL_STYLE`), block kinds their `KIND_STYLE`,
and panels meant to be compared share one scale. `alternet_pl.registry` names each analysis's figure.
"""

from __future__ import annotations

from pathlib import Path

from alternet_pl.plots.compare.common import ComparisonFigure, shared_norm
from alternet_pl.plots.compare.curvature import hessian_spectrum_figure, landscape_figure, trajectory_figure
from alternet_pl.plots.compare.features import depth_figure, fourier_figure, lesion_figure, variance_figure
from alternet_pl.plots.compare.robustness import corruption_figure, freq_noise_figure
from alternet_pl.plots.compare.training import buildup_figure, training_curves_figure

__all__ = [
    "FIGURES",
    "ComparisonFigure",
    "buildup_figure",
    "corruption_figure",
    "depth_figure",
    "fourier_figure",
    "freq_noise_figure",
    "hessian_spectrum_figure",
    "landscape_figure",
    "lesion_figure",
    "official_label",
    "shared_norm",
    "training_curves_figure",
    "trajectory_figure",
    "variance_figure",
]

#: the report's figures in order: (analysis they need or "" for metrics, drawing function)
FIGURES = (
    ("", training_curves_figure),
    ("hessian", hessian_spectrum_figure),
    ("trajectory", trajectory_figure),
    ("fourier", fourier_figure),
    ("variance", variance_figure),
    ("freq_noise", freq_noise_figure),
    ("corruption", corruption_figure),
    ("lesion", lesion_figure),
    ("", buildup_figure),
)


def official_label(path: str | Path) -> str:
    """A name for an official CSV grid: its file stem without `_losslandscape`."""
    return Path(path).stem.replace("_losslandscape", "")
