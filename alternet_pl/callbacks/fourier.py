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

import numpy as np
from torch import nn

from alternet_pl.analysis.fourier import model_delta_log_amplitude
from alternet_pl.callbacks.base import AnalysisContext, AnalysisResult
from alternet_pl.callbacks.layers import LayerAnalysisCallback
from alternet_pl.plots import features as plots


class FourierCallback(LayerAnalysisCallback):
    """Delta log amplitude of feature maps per layer, over the analysis batches (eval mode)."""

    name = "fourier"

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> AnalysisResult:
        curves = model_delta_log_amplitude(model, batches, self.layers, self.selected_kinds)
        names = list(curves)
        hf = [float(c[-1]) for c in curves.values()]
        meta = self.summarize(model, batches[0][0], names, hf, "hf")
        width = max(len(c) for c in curves.values())
        padded = np.full((len(names), width), np.nan)
        for i, c in enumerate(curves.values()):
            padded[i, : len(c)] = c.numpy()
        summary = {
            "layers": names,
            "kinds": meta["kinds"],
            "depth": meta["depth"],
            "hf": hf,
            "curves": {n: c.tolist() for n, c in curves.items()},
        }
        arrays = {"curves": padded, "hf": np.asarray(hf), "depth": np.asarray(meta["depth"])}
        return AnalysisResult(scalars=meta["scalars"], summary=summary, arrays=arrays)

    def plot(self, result: AnalysisResult, context: AnalysisContext) -> dict[str, Any]:
        s = result.summary
        return {"": plots.plot_fourier(s["layers"], s["kinds"], s["depth"], list(s["curves"].values()))}
