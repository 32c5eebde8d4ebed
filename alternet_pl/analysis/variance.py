"""Feature-map variance per layer (paper Fig. 9): MSAs lower it, Convs raise it.

Per layer: variance over the spatial dims (torch's default unbiased estimator, as the official
notebook), averaged over batch and channels. Token features are reshaped as in the Fourier analysis.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from alternet_pl.analysis.features import (
    DEFAULT_KINDS,
    as_feature_map,
    capture,
    check_reached,
    is_channels_last,
    map_batches,
    select_taps,
)
from alternet_pl.analysis.state import eval_mode
from alternet_pl.errors import InputError

__all__ = ["DEFAULT_KINDS", "feature_map_variance", "model_feature_map_variance", "spatial_variance"]


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
    taps = select_taps(model, layers, kinds)
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
