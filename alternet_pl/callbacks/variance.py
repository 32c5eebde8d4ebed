"""`variance` callback: feature-map variance per layer against depth (paper Fig. 9).

Scalars: ``var_<kind>`` and ``var_change_<kind>``: the mean over layers of that kind of
log(variance / variance of the previous layer) (scale-free; the paper: MSAs reduce the variance, < 0,
Convs increase it, > 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from alternet_pl.analysis.variance import model_feature_map_variance
from alternet_pl.callbacks.base import AnalysisContext, AnalysisResult
from alternet_pl.callbacks.layers import LayerAnalysisCallback
from alternet_pl.plots import features as plots


class VarianceCallback(LayerAnalysisCallback):
    """Spatial variance of each tapped feature map (unbiased, mean over batch and channels)."""

    name = "variance"

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> AnalysisResult:
        var = model_feature_map_variance(model, batches, self.layers, self.selected_kinds)
        names, values = list(var), list(var.values())
        meta = self.summarize(model, batches[0][0], names, values, "var", log_ratio=True)
        summary = {"layers": names, "kinds": meta["kinds"], "depth": meta["depth"], "variance": values}
        arrays = {"variance": np.asarray(values), "depth": np.asarray(meta["depth"])}
        return AnalysisResult(scalars=meta["scalars"], summary=summary, arrays=arrays)

    def plot(self, result: AnalysisResult, context: AnalysisContext) -> dict[str, Any]:
        s = result.summary
        fig = plots.plot_by_depth(s["variance"], s["kinds"], s["depth"], "Feature map variance", logy=True)
        return {"": fig}
