"""`fourier` callback: delta log amplitude of each feature map (paper Fig. 2a / Fig. 8).

Scalars: ``hf_<kind>`` (mean highest-frequency value over the points of that kind) and
``hf_change_<kind>`` (mean change of that value across a point of that kind, i.e. point minus the
point before it, counted only where both maps have the same size: across a downsampling the two
curves sit on different frequency grids): the paper's claim is hf_change_msa < 0 (low-pass) and
hf_change_conv > 0. The maths is `alternet_pl.analysis.fourier.run`.
"""

from __future__ import annotations

from typing import Any

from alternet_pl.analysis import fourier
from alternet_pl.analysis.records import FourierRecord
from alternet_pl.callbacks.base import AnalysisContext
from alternet_pl.callbacks.layers import LayerAnalysisCallback
from alternet_pl.plots import features as plots

__all__ = ["FourierCallback"]


class FourierCallback(LayerAnalysisCallback):
    """Delta log amplitude of feature maps per point, over the analysis batches (eval mode)."""

    name = "fourier"
    options_class = fourier.FourierOptions
    run_analysis = staticmethod(fourier.run)

    def plot(self, record: FourierRecord, context: AnalysisContext) -> dict[str, Any]:
        return {"": plots.plot_fourier(record.layers, record.kinds, record.depth, record.curves)}
