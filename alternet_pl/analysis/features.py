"""The one feature collector: forward hooks on a model's `analysis_layers()` taps -> {name: tensor}.

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

import torch
from torch import nn

from alternet_pl.analysis.dist import all_gather_objects, check_same_batches, rank_and_world
from alternet_pl.analysis.progress import progress
from alternet_pl.analysis.state import eval_mode
from alternet_pl.errors import InputError
from alternet_pl.models.taps import Tap

__all__ = [
    "as_feature_map",
    "capture",
    "check_reached",
    "collect_features",
    "is_channels_last",
    "layer_kinds",
    "map_batches",
    "normalized_depths",
    "per_kind_mean",
    "select_taps",
]


#: the block outputs the feature analyses look at by default
DEFAULT_KINDS = ("stem", "conv", "msa", "mlp")


def select_taps(
    model: nn.Module,
    names: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    need_branch: bool = False,
) -> OrderedDict[str, Tap]:
    """The model's taps, in model order, optionally restricted to ``names`` and/or ``kinds``."""
    if not hasattr(model, "analysis_layers"):
        raise TypeError(
            f"{type(model).__name__} has no analysis_layers(): use an alternet_pl model "
            "(timm.create_model('alternet_cifar_micro', ...) etc.) or add analysis_layers() returning "
            "OrderedDict[str, alternet_pl.models.taps.Tap]"
        )
    taps: OrderedDict[str, Tap] = OrderedDict(model.analysis_layers())
    if names is not None:
        unknown = [n for n in names if n not in taps]
        if unknown:
            raise InputError(
                f"layer(s) {unknown} not in {type(model).__name__}.analysis_layers(); "
                f"choose from {list(taps)}"
            )
        taps = OrderedDict((n, t) for n, t in taps.items() if n in set(names))
    if kinds is not None:
        taps = OrderedDict((n, t) for n, t in taps.items() if t.kind in set(kinds))
    if need_branch:
        missing = [n for n, t in taps.items() if t.branch is None]
        if names is not None and missing:
            raise InputError(f"layer(s) {missing} have no residual branch to lesion; drop them from `layers`")
        taps = OrderedDict((n, t) for n, t in taps.items() if t.branch is not None)
    if not taps:
        raise InputError(
            f"no analysis layers left in {type(model).__name__} after names={names}, kinds={kinds}; "
            f"available: {[(n, t.kind) for n, t in model.analysis_layers().items()]}"
        )
    return taps


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


def layer_kinds(model: nn.Module, names: Iterable[str]) -> list[str]:
    """The tap kind of each named layer, in the given order."""
    taps = model.analysis_layers()
    return [taps[n].kind for n in names]


def per_kind_mean(values: Sequence[float], kinds: Sequence[str]) -> dict[str, float]:
    """{kind: mean of the non-NaN values of that kind (NaN if none)}, kinds in order of first appearance."""
    out = {}
    for kind in dict.fromkeys(kinds):
        vals = [v for v, k in zip(values, kinds) if k == kind and v == v]
        out[kind] = float(sum(vals) / len(vals)) if vals else float("nan")
    return out
