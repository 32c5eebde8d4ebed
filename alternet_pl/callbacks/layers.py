"""`LayerAnalysisCallback`: the shared base of per-layer feature analyses (Fourier, variance).

It selects layers from ``model.analysis_layers()`` and summarises one value per layer against
normalised depth, per block kind, with the change across each layer (left out across a
resolution change, where the two layers' maps are not comparable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.features import (
    DEFAULT_KINDS,
    feature_sizes,
    layer_kinds,
    normalized_depths,
    per_kind_mean,
    select_taps,
)
from alternet_pl.callbacks.base import AnalysisCallback
from alternet_pl.callbacks.options import AnalysisData, check_choice
from alternet_pl.errors import InputError

__all__ = ["LayerAnalysisCallback", "depth_summary"]

TapKind = Literal["stem", "conv", "msa", "mlp", "norm", "pool", "head"]


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


class LayerAnalysisCallback(AnalysisCallback):
    """An analysis with one value per tapped layer.

    Args:
        layers: names from ``model.analysis_layers()`` (None: every layer of the chosen kinds).
        kinds: tap kinds to analyse (default stem, conv, msa, mlp: the block outputs).
        data: the analysis batches (two by default: feature statistics settle quickly).
        schedule, log_images, strict: see `AnalysisCallback`.
    """

    def __init__(
        self,
        layers: list[str] | None = None,
        kinds: tuple[TapKind, ...] = DEFAULT_KINDS,
        data: AnalysisData = AnalysisData(num_batches=2),
        **kwargs: Any,
    ) -> None:
        super().__init__(data=data, **kwargs)
        for kind in kinds:
            check_choice(type(self).__name__, "kinds", kind, TapKind)
        self.layers = list(layers) if layers is not None else None
        self.kinds = tuple(kinds)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "layers": self.layers, "kinds": list(self.kinds)}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the asked-for layers against the model before any training (raises `InputError`)."""
        if self.layers:
            model = getattr(pl_module, "model", pl_module)
            try:
                select_taps(model, self.layers)
            except (ValueError, TypeError) as err:
                raise InputError(f"{type(self).__name__}: {err}; fix its `layers` option") from None

    @property
    def selected_kinds(self) -> tuple[str, ...] | None:
        """Kinds to filter by (None when explicit layers are given)."""
        return None if self.layers else self.kinds

    def summarize(
        self,
        model: nn.Module,
        images: torch.Tensor,
        names: Sequence[str],
        values: Sequence[float],
        prefix: str,
        log_ratio: bool = False,
    ) -> dict:
        """`depth_summary` of the values, with each layer's map size measured on `images`."""
        sizes = feature_sizes(model, images, select_taps(model, names))
        return depth_summary(
            model, names, values, prefix, log_ratio=log_ratio, sizes=[sizes[n] for n in names]
        )
