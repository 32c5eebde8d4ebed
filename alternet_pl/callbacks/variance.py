"""`variance` callback: feature-map variance per layer against depth (paper Fig. 9).

Scalars: ``var_<kind>`` and ``var_change_<kind>``: the mean over layers of that kind of
log(variance / variance of the previous layer) (scale-free; the paper: MSAs reduce the variance, < 0,
Convs increase it, > 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn

from alternet_pl.analysis.features import feature_sizes, select_taps
from alternet_pl.analysis.variance import DEFAULT_KINDS, model_feature_map_variance
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext, AnalysisResult
from alternet_pl.callbacks.fourier import depth_summary
from alternet_pl.plots import features as plots


class VarianceCallback(AnalysisCallback):
    """Spatial variance of each tapped feature map (unbiased, mean over batch and channels).

    Args:
        layers: names from ``model.analysis_layers()`` (None: every layer of the chosen kinds).
        kinds: tap kinds to analyse.
    """

    name = "variance"

    def __init__(
        self,
        layers: list[str] | None = None,
        kinds: Sequence[str] = DEFAULT_KINDS,
        every_n_epochs: int | None = None,
        at: Sequence[str] = ("fit_end",),
        num_batches: int = 2,
        batch_size: int | None = None,
        data: str = "val",
        augment: bool = False,
        seed: int = 0,
        log_images: bool = True,
        strict: bool = False,
    ) -> None:
        super().__init__(
            every_n_epochs=every_n_epochs,
            at=at,
            num_batches=num_batches,
            batch_size=batch_size,
            data=data,
            augment=augment,
            seed=seed,
            log_images=log_images,
            strict=strict,
        )
        self.layers = list(layers) if layers is not None else None
        self.kinds = tuple(kinds)

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> AnalysisResult:
        var = model_feature_map_variance(model, batches, self.layers, None if self.layers else self.kinds)
        names, values = list(var), list(var.values())
        sizes = feature_sizes(model, batches[0][0], select_taps(model, names))
        meta = depth_summary(model, names, values, "var", log_ratio=True, sizes=[sizes[n] for n in names])
        summary = {"layers": names, "kinds": meta["kinds"], "depth": meta["depth"], "variance": values}
        arrays = {"variance": np.asarray(values), "depth": np.asarray(meta["depth"])}
        return AnalysisResult(scalars=meta["scalars"], summary=summary, arrays=arrays)

    def plot(self, result: AnalysisResult, context: AnalysisContext) -> dict[str, Any]:
        s = result.summary
        fig = plots.plot_by_depth(s["variance"], s["kinds"], s["depth"], "Feature map variance", logy=True)
        return {"": fig}
