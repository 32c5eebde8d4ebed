"""`lesion` callback: accuracy drop when one residual branch is removed (paper Fig. 12).

Scalars: ``clean_acc`` and ``drop_<kind>`` (mean accuracy drop over blocks of that kind). The maths
is `alternet_pl.analysis.lesion.run`; blocks without a residual branch are skipped and listed in
the record's ``skipped``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from torch import nn

from alternet_pl.analysis import lesion
from alternet_pl.analysis.records import LesionRecord
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext
from alternet_pl.callbacks.layers import json_settings
from alternet_pl.callbacks.options import AnalysisData
from alternet_pl.errors import InputError
from alternet_pl.plots import features as plots

__all__ = ["LesionCallback"]


class LesionCallback(AnalysisCallback):
    """Zero each residual branch in turn (the block becomes its shortcut) and measure accuracy.

    Args:
        layers: name patterns over the model's points (None: every block with a residual branch).
        kinds: {name pattern: kind} relabelling blocks, or None.
        data: the analysis batches (eight by default: accuracy differences need samples).
        schedule, log_images, strict: see `AnalysisCallback`.
    """

    name = "lesion"

    def __init__(
        self,
        layers: list[str] | None = None,
        kinds: dict[str, str] | None = None,
        data: AnalysisData = AnalysisData(num_batches=8),
        **kwargs: Any,
    ) -> None:
        super().__init__(data=data, **kwargs)
        try:
            self.options = lesion.LesionOptions(layers=None if layers is None else tuple(layers), kinds=kinds)
        except InputError as err:
            raise InputError(f"LesionCallback: {err}") from None

    @property
    def layers(self) -> list[str] | None:
        return None if self.options.layers is None else list(self.options.layers)

    def settings(self) -> dict[str, Any]:
        extra = json_settings(self.options)
        if extra["kinds"] is None:
            del extra["kinds"]  # as before kinds existed: the same state key for old checkpoints
        return {**super().settings(), **extra}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check that the model has blocks to lesion before any training (raises `InputError`)."""
        model = getattr(pl_module, "model", pl_module)
        try:
            lesion.lesionable(model, self.options)
        except InputError as err:
            raise InputError(f"LesionCallback: {err}; fix its `layers` option or leave lesion out") from None

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> LesionRecord:
        return lesion.run(model, loss_fn, batches, self.options)

    def plot(self, record: LesionRecord, context: AnalysisContext) -> dict[str, Any]:
        return {
            "": plots.plot_by_depth(record.drop, record.kinds, record.depth, "Accuracy drop when removed")
        }
