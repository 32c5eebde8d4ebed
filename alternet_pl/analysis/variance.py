"""Feature-map variance per layer (paper Fig. 9): MSAs lower it, Convs raise it.

Per layer: variance over the spatial dims (torch's default unbiased estimator, as the official
notebook), averaged over batch and channels. Token features are reshaped as in the Fourier analysis.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from alternet_pl.analysis.features import (
    DEFAULT_KINDS,
    as_feature_map,
    capture,
    check_reached,
    depth_summary,
    feature_sizes,
    first_images,
    is_channels_last,
    map_batches,
    normalized_depths,
)
from alternet_pl.analysis.layers import LayerOptions, select_taps
from alternet_pl.analysis.records import VarianceRecord
from alternet_pl.analysis.state import eval_mode
from alternet_pl.errors import InputError
from alternet_pl.models.taps import Tap

__all__ = [
    "DEFAULT_KINDS",
    "VarianceOptions",
    "feature_map_variance",
    "model_feature_map_variance",
    "run",
    "spatial_variance",
]


@dataclass(frozen=True)
class VarianceOptions(LayerOptions):
    """Which points to measure (`LayerOptions`: ``layers`` patterns, ``kinds``)."""


def spatial_variance(z: torch.Tensor, name: str = "feature") -> torch.Tensor:
    """Per-sample unbiased variance over (H, W), averaged over channels: shape (B,), float64."""
    z = as_feature_map(z, name).double()
    if z.shape[-1] * z.shape[-2] < 2:
        raise InputError(f"layer {name!r}: a 1x1 map has no spatial variance; exclude this layer")
    return z.flatten(2).var(dim=-1).mean(dim=1)


def feature_map_variance(features: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """{name: mean over batch and channels of the spatial variance} for each feature."""
    return OrderedDict((n, float(spatial_variance(z, n).mean())) for n, z in features.items())


def model_feature_map_variance(
    model: nn.Module,
    batches: Iterable,
    layers: Sequence[str] | None = None,
    kinds: Sequence[str] | None = DEFAULT_KINDS,
) -> dict[str, float]:
    """`feature_map_variance` over all images of ``batches`` (eval mode, streamed, DDP-invariant)."""
    return _variances(model, list(batches), select_taps(model, layers, kinds))


def _variances(model: nn.Module, batches: list, taps: Mapping[str, Tap]) -> dict[str, float]:
    nhwc = is_channels_last(model)

    def one(i: int, batch) -> tuple[int, dict[str, float]]:
        images = batch[0] if isinstance(batch, list | tuple) else batch
        with torch.no_grad(), capture(taps, lambda n, z: float(spatial_variance(z, n).sum()), nhwc) as store:
            model(images)
        check_reached(store, taps)
        return images.shape[0], {n: store[n] for n in taps}

    with eval_mode(model):
        parts = map_batches(one, batches, desc="variance")
    total = sum(n for n, _ in parts)
    return OrderedDict((name, sum(s[name] for _, s in parts) / total) for name in taps)


def run(
    model: nn.Module, loss_fn: Callable | None, batches: Iterable, options: VarianceOptions
) -> VarianceRecord:
    """The variance record of ``model`` over ``batches``: per point its feature-map variance, kind and
    depth; ``var_<kind>`` and ``var_change_<kind>`` (mean log ratio to the previous point, left out
    across a resolution change). ``loss_fn`` is not used.

    Raises `InputError` before any batch is analysed when a point's feature is not a map with at
    least two positions: one probe forward of one image checks them all.
    """
    batches = list(batches)
    taps = options.select(model)
    sizes = feature_sizes(model, first_images(batches), taps)
    single = [n for n, side in sizes.items() if side < 2]
    if single:
        raise InputError(f"variance: layer(s) {single} have 1x1 feature maps; leave them out with `layers`")
    variances = _variances(model, batches, taps)
    names, values = list(variances), [float(v) for v in variances.values()]
    kinds = [taps[n].kind for n in names]
    return VarianceRecord(
        layers=names,
        kinds=kinds,
        depth=[float(d) for d in normalized_depths(len(names))],
        by_kind=depth_summary(kinds, values, "var", log_ratio=True, sizes=[sizes[n] for n in names]),
        variance=values,
    )
