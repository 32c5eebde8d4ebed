"""`lesion` callback: accuracy drop when one residual branch is removed (paper Fig. 12).

Scalars: ``clean_acc`` and ``drop_<kind>`` (mean accuracy drop over blocks of that kind).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from alternet_pl.analysis.features import layer_kinds, normalized_depths, per_kind_mean
from alternet_pl.analysis.lesion import lesion_accuracy
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext, AnalysisResult
from alternet_pl.plots import features as plots


class LesionCallback(AnalysisCallback):
    """Zero each residual branch in turn (the block becomes its shortcut) and measure accuracy.

    Args:
        layers: names from ``model.analysis_layers()`` with a branch (None: all that have one).
    """

    name = "lesion"
    default_num_batches = 8

    def __init__(
        self,
        layers: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.layers = list(layers) if layers is not None else None

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> AnalysisResult:
        res = lesion_accuracy(model, batches, self.layers)
        names, drops = list(res["drop"]), list(res["drop"].values())
        kinds = layer_kinds(model, names)
        scalars = {"clean_acc": res["clean_acc"]}
        scalars.update({f"drop_{k}": v for k, v in per_kind_mean(drops, kinds).items()})
        summary = {
            "layers": names,
            "kinds": kinds,
            "depth": normalized_depths(len(names)),
            "clean_acc": res["clean_acc"],
            "acc": list(res["acc"].values()),
            "drop": drops,
        }
        return AnalysisResult(scalars=scalars, summary=summary, arrays={"drop": np.asarray(drops)})

    def plot(self, result: AnalysisResult, context: AnalysisContext) -> dict[str, Any]:
        s = result.summary
        return {"": plots.plot_by_depth(s["drop"], s["kinds"], s["depth"], "Accuracy drop when removed")}
