"""Lesion study (paper Fig. 12): remove one residual branch at a time and measure accuracy.

A lesion replaces the output of a tap's ``branch`` module by zeros through a forward hook, so the
block becomes its shortcut; weights are never touched and the hook is always removed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.features import map_batches, select_taps
from alternet_pl.analysis.state import eval_mode
from alternet_pl.errors import InputError
from alternet_pl.models.taps import Tap

__all__ = ["LesionResult", "lesion_accuracy", "lesioned"]


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


@contextmanager
def lesioned(tap: Tap) -> Iterator[None]:
    """Within the block, ``tap.branch`` outputs zeros (the residual block acts as its shortcut).

    Raises ValueError for a tap without a branch."""
    if tap.branch is None:
        raise InputError("this tap has no residual branch to lesion (Tap.branch is None)")
    handle = tap.branch.register_forward_hook(_zeros)
    try:
        yield
    finally:
        handle.remove()


def lesion_accuracy(model: nn.Module, batches: Iterable, layers: Sequence[str] | None = None) -> LesionResult:
    """Clean accuracy and accuracy with each residual branch removed, in eval mode, no grad.

    Over the taps that have a branch, or the named ``layers``. Returns a `LesionResult`. Raises
    ValueError for an unknown layer or one without a residual branch, TypeError for a model without
    ``analysis_layers()``.
    """
    taps = select_taps(model, layers, need_branch=True)

    def one(i: int, batch) -> tuple[int, list[int]]:
        x, y = batch[0], batch[1]
        y = y.argmax(-1) if y.ndim == 2 else y
        correct = [int((model(x).argmax(-1) == y).sum())]
        for tap in taps.values():
            with lesioned(tap):
                correct.append(int((model(x).argmax(-1) == y).sum()))
        return x.shape[0], correct

    with eval_mode(model), torch.no_grad():
        parts = map_batches(one, batches, desc="lesion")
    total = sum(n for n, _ in parts)
    acc = np.sum([c for _, c in parts], axis=0) / total
    clean = float(acc[0])
    per = OrderedDict((name, float(a)) for name, a in zip(taps, acc[1:]))
    return LesionResult(clean, per, OrderedDict((n, clean - a) for n, a in per.items()))
