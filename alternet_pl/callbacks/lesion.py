"""`lesion` callback: accuracy drop when one residual branch is removed (paper Fig. 12).

Scalars: ``clean_acc`` and ``drop_<kind>`` (mean accuracy drop over blocks of that kind).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from alternet_pl.analysis.features import layer_kinds, normalized_depths, per_kind_mean
from alternet_pl.analysis.lesion import lesion_accuracy
from alternet_pl.analysis.records import LesionRecord
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext
from alternet_pl.callbacks.options import AnalysisData
from alternet_pl.plots import features as plots

__all__ = ["LesionCallback"]


class LesionCallback(AnalysisCallback):
    """Zero each residual branch in turn (the block becomes its shortcut) and measure accuracy.

    Args:
        layers: names from ``model.analysis_layers()`` with a branch (None: all that have one).
        data: the analysis batches (eight by default: accuracy differences need samples).
        schedule, log_images, strict: see `AnalysisCallback`.
    """

    name = "lesion"

    def __init__(
        self,
        layers: list[str] | None = None,
        data: AnalysisData = AnalysisData(num_batches=8),
        **kwargs: Any,
    ) -> None:
        super().__init__(data=data, **kwargs)
        self.layers = list(layers) if layers is not None else None

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "layers": self.layers}

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> LesionRecord:
        res = lesion_accuracy(model, batches, self.layers)
        names, drops = list(res.drop), [float(d) for d in res.drop.values()]
        kinds = layer_kinds(model, names)
        return LesionRecord(
            layers=names,
            kinds=kinds,
            depth=[float(d) for d in normalized_depths(len(names))],
            by_kind={f"drop_{k}": v for k, v in per_kind_mean(drops, kinds).items()},
            clean_acc=float(res.clean_acc),
            acc=[float(a) for a in res.acc.values()],
            drop=drops,
        )

    def plot(self, record: LesionRecord, context: AnalysisContext) -> dict[str, Any]:
        return {
            "": plots.plot_by_depth(record.drop, record.kinds, record.depth, "Accuracy drop when removed")
        }
