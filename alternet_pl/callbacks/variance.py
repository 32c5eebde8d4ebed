"""`variance` callback: feature-map variance per layer against depth (paper Fig. 9).

Scalars: ``var_<kind>`` and ``var_change_<kind>``: the mean over layers of that kind of
log(variance / variance of the previous layer) (scale-free; the paper: MSAs reduce the variance, < 0,
Convs increase it, > 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from alternet_pl.analysis.records import VarianceRecord
from alternet_pl.analysis.variance import model_feature_map_variance
from alternet_pl.callbacks.base import AnalysisContext
from alternet_pl.callbacks.layers import LayerAnalysisCallback
from alternet_pl.plots import features as plots

__all__ = ["VarianceCallback"]


class VarianceCallback(LayerAnalysisCallback):
    """Spatial variance of each tapped feature map (unbiased, mean over batch and channels)."""

    name = "variance"

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> VarianceRecord:
        var = model_feature_map_variance(model, batches, self.layers, self.selected_kinds)
        names, values = list(var), [float(v) for v in var.values()]
        meta = self.summarize(model, batches[0][0], names, values, "var", log_ratio=True)
        return VarianceRecord(
            layers=names,
            kinds=meta["kinds"],
            depth=[float(d) for d in meta["depth"]],
            by_kind=meta["scalars"],
            variance=values,
        )

    def plot(self, record: VarianceRecord, context: AnalysisContext) -> dict[str, Any]:
        fig = plots.plot_by_depth(
            record.variance, record.kinds, record.depth, "Feature map variance", logy=True
        )
        return {"": fig}
