"""`fourier` callback: delta log amplitude of each tapped feature map (paper Fig. 2a / Fig. 8).

Scalars: ``hf_<kind>`` (mean highest-frequency value over the layers of that kind) and
``hf_change_<kind>`` (mean change of that value across a layer of that kind, i.e. layer minus the
layer before it, counted only where both maps have the same size: across a downsampling the two
curves sit on different frequency grids): the paper's claim is hf_change_msa < 0 (low-pass) and
hf_change_conv > 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from alternet_pl.analysis.fourier import model_delta_log_amplitude
from alternet_pl.analysis.records import FourierRecord
from alternet_pl.callbacks.base import AnalysisContext
from alternet_pl.callbacks.layers import LayerAnalysisCallback
from alternet_pl.plots import features as plots

__all__ = ["FourierCallback"]


class FourierCallback(LayerAnalysisCallback):
    """Delta log amplitude of feature maps per layer, over the analysis batches (eval mode)."""

    name = "fourier"

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> FourierRecord:
        curves = model_delta_log_amplitude(model, batches, self.layers, self.selected_kinds)
        names = list(curves)
        hf = [float(c[-1]) for c in curves.values()]
        meta = self.summarize(model, batches[0][0], names, hf, "hf")
        return FourierRecord(
            layers=names,
            kinds=meta["kinds"],
            depth=[float(d) for d in meta["depth"]],
            by_kind=meta["scalars"],
            hf=hf,
            curves=[[float(v) for v in c] for c in curves.values()],
        )

    def plot(self, record: FourierRecord, context: AnalysisContext) -> dict[str, Any]:
        return {"": plots.plot_fourier(record.layers, record.kinds, record.depth, record.curves)}
