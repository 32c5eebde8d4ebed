"""Lesion study (paper Fig. 12): remove one residual branch at a time and measure accuracy.

A lesion replaces the output of a tap's ``branch`` module by zeros through a forward hook, so the
block becomes its shortcut; weights are never touched and the hook is always removed. On a model
without ``analysis_layers()`` the blocks are those `analysis.layers` finds; a block without a
residual branch (or whose branch the forward pass never runs) is skipped, and the record says so.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from alternet_pl.analysis.features import accuracies, first_images, normalized_depths, per_kind_mean
from alternet_pl.analysis.layers import model_layers, resolve_kind, select_taps
from alternet_pl.analysis.records import LesionRecord
from alternet_pl.analysis.state import eval_mode
from alternet_pl.errors import InputError
from alternet_pl.models.taps import Tap

__all__ = ["LesionOptions", "LesionResult", "lesion_accuracy", "lesionable", "lesioned", "run"]

#: kinds of points that are blocks (a lesion candidate); stem, norm, pool and head are not
BLOCK_KINDS = ("conv", "msa", "mlp", "other")


@dataclass(frozen=True)
class LesionOptions:
    """Which blocks to lesion.

    Args:
        layers: name patterns over the model's points (None: every block with a residual branch;
            the others are skipped and listed in the record).
        kinds: {name pattern: kind} relabelling points (e.g. {"blocks.*": "attention"}), or None.
    """

    layers: tuple[str, ...] | None = None
    kinds: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.layers is not None:
            if isinstance(self.layers, str) or not all(isinstance(p, str) for p in self.layers):
                raise InputError(f"layers={self.layers!r}: give a list of name patterns, e.g. ['layer1.*']")
            object.__setattr__(self, "layers", tuple(self.layers))
        if self.kinds is not None:
            if not isinstance(self.kinds, Mapping):
                raise InputError(f"lesion kinds={self.kinds!r}: give a {{name pattern: kind}} mapping")
            object.__setattr__(self, "kinds", {str(p): resolve_kind(k) for p, k in self.kinds.items()})


@dataclass(frozen=True)
class LesionResult:
    """Clean accuracy, accuracy with each residual branch removed, and the drop (clean - lesioned),
    per layer in model order."""

    clean_acc: float
    acc: dict[str, float]
    drop: dict[str, float]


def _zeros(module: nn.Module, args, out):
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"lesion: branch {type(module).__name__} returned {type(out).__name__}, not a tensor")
    return torch.zeros_like(out)


def _its_input(module: nn.Module, args, out):
    if not isinstance(out, torch.Tensor) or not args or getattr(args[0], "shape", None) != out.shape:
        raise TypeError(f"lesion: block {type(module).__name__} does not return a tensor shaped as its input")
    return args[0]


@contextmanager
def lesioned(tap: Tap) -> Iterator[None]:
    """Within the block, ``tap.branch`` outputs zeros (the residual block acts as its shortcut).

    Raises ValueError for a tap without a branch."""
    if tap.branch is None:
        raise InputError("this tap has no residual branch to lesion (Tap.branch is None)")
    handle = tap.branch.register_forward_hook(_zeros if tap.lesion == "zero" else _its_input)
    try:
        yield
    finally:
        handle.remove()


def lesionable(model: nn.Module, options: LesionOptions) -> OrderedDict[str, Tap]:
    """The blocks a lesion will try (all blocks, or the asked-for ones), without running the model.

    Raises `InputError` when the model has no blocks or an asked-for layer is not a block."""
    if options.layers is None:
        points = model_layers(model, options.kinds)
        taps = OrderedDict((n, t) for n, t in points.items() if t.kind in BLOCK_KINDS)
        if not taps:
            raise InputError(
                f"lesion: {type(model).__name__} has no blocks to lesion; points: {list(points)}"
            )
        return taps
    taps = select_taps(model, options.layers, relabel=options.kinds)
    odd = [n for n, t in taps.items() if t.branch is None and t.kind not in BLOCK_KINDS]
    if odd:
        raise InputError(
            f"lesion: layer(s) {odd} are not blocks with a residual branch; drop them from `layers`"
        )
    return taps


def _returns_its_input_when_zeroed(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` with every parameter set to zero maps ``x`` to itself: an identity shortcut
    around branches that then output zero (y = x + f(x), f's weights all 0)."""
    zeros = {n: torch.zeros_like(p) for n, p in module.named_parameters()}
    y = torch.func.functional_call(module, zeros, (x,))
    return isinstance(y, torch.Tensor) and y.shape == x.shape and bool(torch.allclose(y, x, atol=1e-6))


def _keeps_its_input(tap: Tap, args: tuple, kwargs: dict) -> bool:
    """Whether the block still passes its input on with its branch zeroed: a shortcut exists (a block
    whose ``drop_path`` is its whole output, such as RegNet's or byobnet's without a shortcut, gives
    the same output for any input)."""
    with lesioned(tap):
        a = tap.module(*args, **kwargs)
        b = tap.module(2 * args[0] + 1, *args[1:], **kwargs)
    return not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b))


def _probe(
    model: nn.Module, taps: Mapping[str, Tap], images: torch.Tensor
) -> tuple[OrderedDict[str, Tap], dict[str, str]]:
    """(the blocks that can be lesioned, {skipped block: why}) from one eval, no-grad forward.

    A known branch must be run by the forward pass, and the block must still depend on its input with
    the branch zeroed; a block without one is lesioned by returning its input when it has an identity
    shortcut (`_returns_its_input_when_zeroed`)."""
    ran: set[str] = set()
    seen: dict[str, tuple[tuple, dict]] = {}

    def mark(name: str) -> Callable:
        return lambda *_: ran.add(name)

    def keep_input(name: str) -> Callable:
        def hook(mod: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:  # returns None: output stays
            if args:
                seen.setdefault(name, (args, kwargs))

        return hook

    handles = [t.branch.register_forward_hook(mark(n)) for n, t in taps.items() if t.branch is not None]
    handles += [
        t.module.register_forward_hook(keep_input(n), with_kwargs=True)
        for n, t in taps.items()
        if t.point == "output"
    ]
    try:
        with eval_mode(model), torch.no_grad():
            model(images)
            usable, skipped = OrderedDict(), {}
            for n, t in taps.items():
                if t.branch is not None:
                    if n not in ran:
                        skipped[n] = "its residual branch is not run by the forward pass"
                    elif n in seen and not _keeps_its_input(t, *seen[n]):
                        skipped[n] = "no shortcut: its output ignores its input once its branch is zeroed"
                    else:
                        usable[n] = t
                elif n in seen and _returns_its_input_when_zeroed(t.module, seen[n][0][0]):
                    usable[n] = Tap(
                        t.module,
                        t.kind,
                        branch=t.module,
                        params=t.block_modules() or (t.module,),
                        lesion="skip",
                    )
                else:
                    skipped[n] = "no residual path found"
    finally:
        for h in handles:
            h.remove()
    return usable, skipped


def run(
    model: nn.Module, loss_fn: Callable | None, batches: Iterable, options: LesionOptions
) -> LesionRecord:
    """The lesion record: clean accuracy, accuracy with each block's residual branch zeroed, the drop,
    ``drop_<kind>`` means, and the blocks skipped (no residual path, or a branch the forward never
    runs). One probe forward of one image decides which blocks can be lesioned.

    Raises `InputError` before any batch is analysed when nothing can be lesioned, or an asked-for
    layer cannot."""
    batches = list(batches)
    taps, skipped = _probe(model, lesionable(model, options), first_images(batches)[:1])
    name = type(model).__name__
    if not taps:
        raise InputError(f"lesion: no block of {name} has a residual path to drop; skipped {skipped}")
    if options.layers is not None and skipped:
        raise InputError(f"lesion: layer(s) {skipped} of {name} cannot be lesioned; drop them from `layers`")
    res = _accuracies(model, batches, taps)
    names, drops = list(res.drop), [float(d) for d in res.drop.values()]
    kinds = [taps[n].kind for n in names]
    return LesionRecord(
        layers=names,
        kinds=kinds,
        depth=[float(d) for d in normalized_depths(len(names))],
        by_kind={f"drop_{k}": v for k, v in per_kind_mean(drops, kinds).items()},
        clean_acc=float(res.clean_acc),
        acc=[float(a) for a in res.acc.values()],
        drop=drops,
        skipped=[f"{n}: {why}" for n, why in skipped.items()],
    )


def lesion_accuracy(model: nn.Module, batches: Iterable, layers: Sequence[str] | None = None) -> LesionResult:
    """Clean accuracy and accuracy with each residual branch removed, in eval mode, no grad.

    Over the taps that have a branch, or the named ``layers`` (patterns). Returns a `LesionResult`.
    Raises `InputError` for an unknown layer or one without a residual branch.
    """
    return _accuracies(model, batches, select_taps(model, layers, need_branch=True))


def _accuracies(model: nn.Module, batches: Iterable, taps: Mapping[str, Tap]) -> LesionResult:
    def logits(i: int, x: torch.Tensor) -> Iterator[torch.Tensor]:
        yield model(x)
        for tap in taps.values():
            with lesioned(tap):
                yield model(x)

    acc = accuracies(model, batches, logits, desc="lesion")
    clean = float(acc[0])
    per = OrderedDict((name, float(a)) for name, a in zip(taps, acc[1:]))
    return LesionResult(clean, per, OrderedDict((n, clean - a) for n, a in per.items()))
