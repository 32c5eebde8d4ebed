"""`variance` callback: feature-map variance per point against depth (paper Fig. 9).

Scalars: ``var_<kind>`` and ``var_change_<kind>``: the mean over points of that kind of
log(variance / variance of the previous point) (scale-free; the paper: MSAs reduce the variance, < 0,
Convs increase it, > 0). The maths is `alternet_pl.analysis.variance.run`.
"""

from __future__ import annotations

from typing import Any

from alternet_pl.analysis import variance
from alternet_pl.analysis.records import VarianceRecord
from alternet_pl.callbacks.base import AnalysisContext
from alternet_pl.callbacks.layers import LayerAnalysisCallback
from alternet_pl.plots import features as plots

__all__ = ["VarianceCallback"]


class VarianceCallback(LayerAnalysisCallback):
    """Spatial variance of each feature map (unbiased, mean over batch and channels)."""

    name = "variance"
    options_class = variance.VarianceOptions
    run_analysis = staticmethod(variance.run)

    def plot(self, record: VarianceRecord, context: AnalysisContext) -> dict[str, Any]:
        fig = plots.plot_by_depth(
            record.variance, record.kinds, record.depth, "Feature map variance", logy=True
        )
        return {"": fig}
