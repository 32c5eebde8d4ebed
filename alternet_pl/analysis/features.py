"""The one feature collector: forward hooks on a model's taps (`analysis.layers`) -> {name: tensor}.

Fourier, variance and lesion analyses all go through it. A tap with ``point="output"`` captures the
module's output (forward hook); ``point="input"`` its first positional input (forward pre-hook),
e.g. a ViT block's state after the attention residual step. Hooks are always removed, even when
the forward pass raises. Also here: token -> feature-map conversion and the batch sharding that
makes every analysis give the same result on one process and under DDP.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.dist import all_gather_objects, check_same_batches, rank_and_world
from alternet_pl.analysis.layers import DEFAULT_KINDS, model_layers, select_taps
from alternet_pl.analysis.loss import hard_labels
from alternet_pl.analysis.progress import progress
from alternet_pl.analysis.state import eval_mode
from alternet_pl.errors import InputError
from alternet_pl.models.taps import Tap

__all__ = [
    "DEFAULT_KINDS",
    "accuracies",
    "as_feature_map",
    "capture",
    "check_reached",
    "collect_features",
    "depth_summary",
    "feature_sizes",
    "first_images",
    "is_channels_last",
    "layer_kinds",
    "map_batches",
    "normalized_depths",
    "per_kind_mean",
    "select_taps",
]


def _first_tensor(value: Any) -> torch.Tensor:
    while isinstance(value, list | tuple):
        value = value[0]
    return value


def is_channels_last(model: nn.Module) -> bool:
    """Whether the model's 4-D features are NHWC (timm Swin sets ``output_fmt = "NHWC"``)."""
    return str(getattr(model, "output_fmt", "NCHW")) == "NHWC"


@contextmanager
def capture(
    taps: Mapping[str, Tap],
    transform: Callable[[str, torch.Tensor], Any] | None = None,
    channels_last: bool = False,
) -> Iterator[dict[str, Any]]:
    """Hook every tap; each forward fills the yielded dict with ``transform(name, feature)`` per name.

    The transform runs inside the hook, before any later in-place op could alter the tensor;
    without one the feature is detached and cloned. ``channels_last``: 4-D features are NHWC and
    are handed on as NCHW.
    """
    store: dict[str, Any] = {}
    handles = []

    def save(name: str, value: Any) -> None:
        t = _first_tensor(value).detach()
        if channels_last and t.ndim == 4:
            t = t.permute(0, 3, 1, 2)
        store[name] = transform(name, t) if transform is not None else t.clone()

    try:
        for name, tap in taps.items():
            if tap.point == "input":
                hook = (lambda n: lambda mod, args: save(n, args[0]))(name)
                handles.append(tap.module.register_forward_pre_hook(hook))
            else:
                hook = (lambda n: lambda mod, args, out: save(n, out))(name)
                handles.append(tap.module.register_forward_hook(hook))
        yield store
    finally:
        for h in handles:
            h.remove()


def check_reached(store: Mapping[str, Any], taps: Mapping[str, Tap]) -> None:
    """Raise when a tapped layer was not run by the forward pass (a wrong or unused tap)."""
    missing = [n for n in taps if n not in store]
    if missing:
        raise RuntimeError(f"layer(s) {missing} were not run by the forward pass; check analysis_layers()")


def collect_features(
    model: nn.Module,
    images: torch.Tensor,
    names: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """One eval-mode, no-grad forward of ``images``; return {layer name: captured feature}."""
    taps = select_taps(model, names, kinds)
    with eval_mode(model), torch.no_grad(), capture(taps, channels_last=is_channels_last(model)) as store:
        model(images)
    check_reached(store, taps)
    return OrderedDict((n, store[n]) for n in taps)


def feature_sizes(model: nn.Module, images: torch.Tensor, taps: Mapping[str, Tap]) -> dict[str, int]:
    """Spatial side of each tapped feature map, from one eval-mode forward of a single image."""
    side = lambda n, z: int(as_feature_map(z, n).shape[-1])  # noqa: E731
    with eval_mode(model), torch.no_grad(), capture(taps, side, is_channels_last(model)) as store:
        model(images[:1])
    check_reached(store, taps)
    return {n: store[n] for n in taps}


def as_feature_map(z: torch.Tensor, name: str = "feature") -> torch.Tensor:
    """(B, C, H, W) as is; tokens (B, N, D) -> (B, D, sqrt N, sqrt N), dropping a CLS token.

    A CLS token is assumed when N is not a perfect square but N - 1 is (as the official code drops
    it for ViT/PiT). Anything else is an error naming the layer.
    """
    if z.ndim == 4:
        return z
    if z.ndim == 3:
        b, n, d = z.shape
        side = math.isqrt(n)
        if side * side != n:
            side = math.isqrt(n - 1) if n > 1 else 0
            if side == 0 or side * side != n - 1:
                raise InputError(
                    f"layer {name!r}: token features of shape {tuple(z.shape)} are not square "
                    "(N or N - 1 with a CLS token must be a perfect square); exclude this layer "
                    "(`layers=` / `kinds=`) or tap a feature map"
                )
            z = z[:, 1:]
        return z.transpose(1, 2).reshape(b, d, side, side)
    raise InputError(
        f"layer {name!r}: expected a 4-D feature map (B, C, H, W) or 3-D tokens (B, N, D), got shape "
        f"{tuple(z.shape)}; exclude this layer (`layers=` / `kinds=`), e.g. pooled or head outputs"
    )


def normalized_depths(n: int) -> list[float]:
    """Layer i of n at depth i / (n - 1), as the official Fourier notebook plots it."""
    return [i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def map_batches(fn: Callable[[int, Any], Any], batches: Iterable, desc: str = "") -> list[Any]:
    """``[fn(i, batch) for i, batch in enumerate(batches)]``, batches sharded round-robin over ranks.

    Every rank gets the full list back in batch order, so reductions done afterwards in that order
    are identical on one process and under DDP.
    """
    rank, world = rank_and_world()
    batches = list(batches)
    check_same_batches(batches, desc or "map_batches")
    mine = [(i, b) for i, b in enumerate(batches) if i % world == rank]
    local = [(i, fn(i, b)) for i, b in progress(mine, desc=desc)]
    gathered = [item for part in all_gather_objects(local) for item in part]
    return [r for _, r in sorted(gathered, key=lambda ir: ir[0])]


def accuracies(
    model: nn.Module,
    batches: Iterable,
    variants: Callable[[int, torch.Tensor], Iterable[torch.Tensor]],
    desc: str = "",
) -> np.ndarray:
    """The accuracy over all `batches` of each logits tensor ``variants(i, images)`` yields for batch i, in
    order (e.g. the clean model's, then one per lesioned branch or noise band): correct counts pooled over
    the batches (`map_batches`: the same on one process and under DDP), eval mode, no grad."""

    def one(i: int, batch) -> tuple[int, list[int]]:
        x, y = batch[0], hard_labels(batch[1])
        return x.shape[0], [int((logits.argmax(-1) == y).sum()) for logits in variants(i, x)]

    with eval_mode(model), torch.no_grad():
        parts = map_batches(one, batches, desc=desc)
    total = sum(n for n, _ in parts)
    return np.sum([c for _, c in parts], axis=0) / total


def layer_kinds(model: nn.Module, names: Iterable[str]) -> list[str]:
    """The tap kind of each named layer (``analysis_layers()`` or discovered), in the given order."""
    taps = model_layers(model)
    return [taps[n].kind for n in names]


def first_images(batches: Sequence) -> torch.Tensor:
    """The images of the first batch (a batch is ``(images, labels, ...)`` or an images tensor)."""
    if not batches:
        raise InputError("no batches to analyse; give at least one batch")
    first = batches[0]
    return first[0] if isinstance(first, list | tuple) else first


def depth_summary(
    kinds: Sequence[str],
    values: Sequence[float],
    prefix: str,
    log_ratio: bool = False,
    sizes: Sequence[int] | None = None,
) -> dict[str, float]:
    """Per-kind means of the values (``<prefix>_<kind>``) and of their layer-to-layer change
    (``<prefix>_change_<kind>``: value minus the previous layer's, or with ``log_ratio``
    log(value / previous)). With ``sizes`` (each layer's map side), a change across a size change
    (a downsampling layer) is left out."""
    scalars = {f"{prefix}_{k}": v for k, v in per_kind_mean(values, kinds).items()}
    if len(values) > 1:
        pairs = list(zip(values[:-1], values[1:]))
        if log_ratio:
            changes = [math.log(b / a) if a > 0 and b > 0 else math.nan for a, b in pairs]
        else:
            changes = [b - a for a, b in pairs]
        if sizes is not None:
            changes = [c if sizes[i] == sizes[i + 1] else math.nan for i, c in enumerate(changes)]
        for k, v in per_kind_mean(changes, kinds[1:]).items():
            scalars[f"{prefix}_change_{k}"] = v
    return scalars


def per_kind_mean(values: Sequence[float], kinds: Sequence[str]) -> dict[str, float]:
    """{kind: mean of the non-NaN values of that kind (NaN if none)}, kinds in order of first appearance."""
    out = {}
    for kind in dict.fromkeys(kinds):
        vals = [v for v, k in zip(values, kinds) if k == kind and v == v]
        out[kind] = float(sum(vals) / len(vals)) if vals else float("nan")
    return out
