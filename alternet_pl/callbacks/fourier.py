"""`fourier` callback: delta log amplitude of each tapped feature map (paper Fig. 2a / Fig. 8).

Scalars: ``hf_<kind>`` (mean highest-frequency value over the layers of that kind) and
``hf_change_<kind>`` (mean change of that value across a layer of that kind, i.e. layer minus the
layer before it, counted only where both maps have the same size: across a downsampling the two
curves sit on different frequency grids): the paper's claim is hf_change_msa < 0 (low-pass) and
hf_change_conv > 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn

from alternet_pl.analysis.features import (
    feature_sizes,
    layer_kinds,
    normalized_depths,
    per_kind_mean,
    select_taps,
)
from alternet_pl.analysis.fourier import DEFAULT_KINDS, model_delta_log_amplitude
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext, AnalysisResult
from alternet_pl.plots import features as plots


def depth_summary(
    model: nn.Module,
    names: Sequence[str],
    values: Sequence[float],
    prefix: str,
    log_ratio: bool = False,
    sizes: Sequence[int] | None = None,
) -> dict:
    """Per-layer kinds and depths plus per-kind means of the values and of their layer-to-layer change
    (value minus the previous layer's, or with ``log_ratio`` log(value / previous)). With ``sizes``
    (each layer's map side), a change across a size change (a downsampling layer) is left out."""
    kinds = layer_kinds(model, names)
    scalars = {f"{prefix}_{k}": v for k, v in per_kind_mean(values, kinds).items()}
    if len(values) > 1:
        if log_ratio:
            changes = [
                float(np.log(b / a)) if a > 0 and b > 0 else float("nan")
                for a, b in zip(values[:-1], values[1:])
            ]
        else:
            changes = [b - a for a, b in zip(values[:-1], values[1:])]
        if sizes is not None:
            changes = [c if sizes[i] == sizes[i + 1] else float("nan") for i, c in enumerate(changes)]
        for k, v in per_kind_mean(changes, kinds[1:]).items():
            scalars[f"{prefix}_change_{k}"] = v
    return {"kinds": kinds, "depth": normalized_depths(len(names)), "scalars": scalars}


class FourierCallback(AnalysisCallback):
    """Delta log amplitude of feature maps per layer, over the analysis batches (eval mode).

    Args:
        layers: names from ``model.analysis_layers()`` (None: every layer of the chosen kinds).
        kinds: tap kinds to analyse (default stem, conv, msa, mlp: the block outputs).
    """

    name = "fourier"

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
        curves = model_delta_log_amplitude(model, batches, self.layers, None if self.layers else self.kinds)
        names = list(curves)
        hf = [float(c[-1]) for c in curves.values()]
        sizes = feature_sizes(model, batches[0][0], select_taps(model, names))
        meta = depth_summary(model, names, hf, "hf", sizes=[sizes[n] for n in names])
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
