"""`lesion` callback: accuracy drop when one residual branch is removed (paper Fig. 12).

Scalars: ``clean_acc`` and ``drop_<kind>`` (mean accuracy drop over blocks of that kind). The maths
is `alternet_pl.analysis.lesion.run`; blocks without a residual branch are skipped and listed in
the record's ``skipped``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from alternet_pl.analysis import lesion
from alternet_pl.analysis.records import LesionRecord
from alternet_pl.callbacks.base import AnalysisContext
from alternet_pl.callbacks.layers import LayerAnalysisCallback
from alternet_pl.callbacks.options import AnalysisData
from alternet_pl.errors import InputError
from alternet_pl.plots import features as plots

__all__ = ["LesionCallback"]


class LesionCallback(LayerAnalysisCallback):
    """Zero each residual branch in turn (the block becomes its shortcut) and measure accuracy.

    Args:
        layers: name patterns over the model's points (None: every block with a residual branch).
        kinds: {name pattern: kind} relabelling blocks, or None.
        data: the analysis batches (eight by default: accuracy differences need samples).
        schedule, log_images, strict: see `AnalysisCallback`.
    """

    name = "lesion"
    options_class = lesion.LesionOptions
    run_analysis = staticmethod(lesion.run)

    def __init__(
        self,
        layers: list[str] | None = None,
        kinds: dict[str, str] | None = None,
        data: AnalysisData = AnalysisData(num_batches=8),
        **kwargs: Any,
    ) -> None:
        super().__init__(layers=layers, kinds=kinds, data=data, **kwargs)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check that the model has blocks to lesion before any training (raises `InputError`)."""
        model = getattr(pl_module, "model", pl_module)
        try:
            lesion.lesionable(model, self.options)
        except InputError as err:
            raise InputError(f"LesionCallback: {err}; fix its `layers` option or leave lesion out") from None

    def plot(self, record: LesionRecord, context: AnalysisContext) -> dict[str, Any]:
        return {
            "": plots.plot_by_depth(record.drop, record.kinds, record.depth, "Accuracy drop when removed")
        }
