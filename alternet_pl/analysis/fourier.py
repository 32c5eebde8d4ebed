"""Relative log amplitude of Fourier-transformed feature maps (paper Fig. 2a and Fig. 8).

For a feature map z (B, C, H, W): A = log(|FFT2(z)| + 1e-6), centred, averaged over B and C; the
diagonal A[H/2 + i, W/2 + i], i = 0 .. H/2 - 1, minus its first value. The curve's last entry (the
highest frequency, plotted at pi) is what the depth figure shows: it falls after low-pass (MSA)
blocks and rises after high-pass (Conv) blocks.
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
from alternet_pl.analysis.freq import centered_fft2
from alternet_pl.analysis.layers import LayerOptions, select_taps
from alternet_pl.analysis.records import FourierRecord
from alternet_pl.analysis.state import eval_mode
from alternet_pl.errors import InputError
from alternet_pl.models.taps import Tap

__all__ = [
    "DEFAULT_KINDS",
    "FourierOptions",
    "delta_from_map",
    "delta_log_amplitude",
    "log_amplitude_map",
    "model_delta_log_amplitude",
    "run",
]


@dataclass(frozen=True)
class FourierOptions(LayerOptions):
    """Which points to transform (`LayerOptions`: ``layers`` patterns, ``kinds``)."""


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
    return _curves(model, list(batches), select_taps(model, layers, kinds))


def _curves(model: nn.Module, batches: list, taps: Mapping[str, Tap]) -> dict[str, torch.Tensor]:
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


def run(
    model: nn.Module, loss_fn: Callable | None, batches: Iterable, options: FourierOptions
) -> FourierRecord:
    """The Fourier record of ``model`` over ``batches``: per point its curve, its highest-frequency
    value ``hf``, kind and depth; ``hf_<kind>`` and ``hf_change_<kind>`` (change across a point of
    that kind, left out across a resolution change). ``loss_fn`` is not used.

    Raises `InputError` before any batch is analysed when a point's feature is not a square map of
    side >= 2 (e.g. pooled or 1-D features): one probe forward of one image checks them all.
    """
    batches = list(batches)
    taps = options.select(model)
    sizes = feature_sizes(model, first_images(batches), taps)
    small = [n for n, side in sizes.items() if side < 2]
    if small:
        raise InputError(
            f"fourier: layer(s) {small} have 1x1 feature maps (no frequencies); leave them out with `layers`"
        )
    curves = _curves(model, batches, taps)
    names = list(curves)
    hf = [float(c[-1]) for c in curves.values()]
    kinds = [taps[n].kind for n in names]
    return FourierRecord(
        layers=names,
        kinds=kinds,
        depth=[float(d) for d in normalized_depths(len(names))],
        by_kind=depth_summary(kinds, hf, "hf", sizes=[sizes[n] for n in names]),
        hf=hf,
        curves=[[float(v) for v in c] for c in curves.values()],
    )
