"""Relative log amplitude of Fourier-transformed feature maps (paper Fig. 2a and Fig. 8).

For a feature map z (B, C, H, W): A = log(|FFT2(z)| + 1e-6), centred, averaged over B and C; the
diagonal A[H/2 + i, W/2 + i], i = 0 .. H/2 - 1, minus its first value. The curve's last entry (the
highest frequency, plotted at pi) is what the depth figure shows: it falls after low-pass (MSA)
blocks and rises after high-pass (Conv) blocks.
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
from alternet_pl.analysis.freq import centered_fft2
from alternet_pl.analysis.state import eval_mode
from alternet_pl.errors import InputError

__all__ = [
    "DEFAULT_KINDS",
    "delta_from_map",
    "delta_log_amplitude",
    "log_amplitude_map",
    "model_delta_log_amplitude",
]


def log_amplitude_map(z: torch.Tensor, name: str = "feature", reduce: str = "mean") -> torch.Tensor:
    """Centred log(|FFT2| + 1e-6) of a feature map, averaged over channels and over (or summed over,
    with ``reduce="sum"``) the batch, in float64: shape (H, W)."""
    z = as_feature_map(z, name).double()
    h, w = z.shape[-2:]
    if h != w or h < 2:
        raise InputError(
            f"layer {name!r}: the diagonal needs a square map of side >= 2, got {h}x{w}; "
            "exclude this layer (`layers=` / `kinds=`)"
        )
    amp = torch.log(centered_fft2(z).abs() + 1e-6).mean(dim=1)  # (B, H, W)
    return amp.sum(dim=0) if reduce == "sum" else amp.mean(dim=0)


def delta_from_map(amp: torch.Tensor) -> torch.Tensor:
    """Diagonal from the centre (frequency 0, index H // 2 after the shift) to the corner, relative to
    frequency 0: H - H // 2 values (H / 2 for even H; odd H keeps its highest frequency, as the
    official ``diag()[int(h / 2):]``)."""
    h = amp.shape[-1]
    c = h // 2
    idx = c + torch.arange(h - c)
    diag = amp[idx, idx]
    return diag - diag[0]


def delta_log_amplitude(features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{name: delta log amplitude curve (H - H // 2 values, frequencies 0 .. pi)} for each feature."""
    return OrderedDict((n, delta_from_map(log_amplitude_map(z, n))) for n, z in features.items())


def model_delta_log_amplitude(
    model: nn.Module,
    batches: Iterable,
    layers: Sequence[str] | None = None,
    kinds: Sequence[str] | None = DEFAULT_KINDS,
) -> dict[str, torch.Tensor]:
    """Delta log amplitude of the model's tapped features over all images of ``batches`` (eval mode).

    Streams: per batch only one (H, W) map per layer is kept, summed in batch order, so the result
    equals ``delta_log_amplitude`` of the concatenated features and is the same under DDP.
    """
    taps = select_taps(model, layers, kinds)
    nhwc = is_channels_last(model)

    def one(i: int, batch) -> tuple[int, dict[str, torch.Tensor]]:
        images = batch[0] if isinstance(batch, list | tuple) else batch
        with torch.no_grad(), capture(taps, lambda n, z: log_amplitude_map(z, n, "sum").cpu(), nhwc) as store:
            model(images)
        check_reached(store, taps)
        return images.shape[0], OrderedDict((n, store[n]) for n in taps)

    with eval_mode(model):
        parts = map_batches(one, batches, desc="fourier")
    total = sum(n for n, _ in parts)
    out = OrderedDict()
    for name in taps:
        acc = parts[0][1][name].clone()
        for _, sums in parts[1:]:
            acc += sums[name]
        out[name] = delta_from_map(acc / total)
    return out
