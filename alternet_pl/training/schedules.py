"""Learning-rate schedules: the `LRSchedule` option group and the closed forms of its factors.

Every schedule warms up linearly per iteration, then decays. "official" and "multistep" are the authors'
(``ops/trains.py``, ``ops/schedulers.py``): warm-up from 0, then a decay stepped once per epoch; "per_step"
is this project's per-iteration cosine. The functions are the multipliers of the peak learning rate at one
optimizer step, written out so that tests can check them against closed forms and the authors' loop.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from alternet_pl.errors import InputError, check_choice

__all__ = [
    "LRSchedule",
    "ScheduleKind",
    "official_warmup_cosine",
    "official_warmup_multistep",
    "warmup_cosine",
]

ScheduleKind = Literal["official", "per_step", "multistep"]


def official_warmup_cosine(
    step: int, warmup_steps: int, steps_per_epoch: int, cosine_epochs: int, min_ratio: float = 0.0
) -> float:
    """LR multiplier of the authors' schedule at optimizer step `step` (0-based).

    Warm-up: ``step / warmup_steps`` (linear from 0, per iteration, as their ``WarmupScheduler``); then
    ``CosineAnnealingLR(T_max=cosine_epochs)`` stepped once per epoch: epoch e after the warm-up trains
    at ``min + (1 - min) * (1 + cos(pi * e / cosine_epochs)) / 2``. Training lasts warm-up + cosine epochs.
    """
    if step < warmup_steps:
        return step / warmup_steps
    epoch = min((step - warmup_steps) // max(1, steps_per_epoch), cosine_epochs)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * epoch / max(1, cosine_epochs)))


def official_warmup_multistep(
    step: int, warmup_steps: int, steps_per_epoch: int, milestones: Sequence[int], gamma: float
) -> float:
    """LR multiplier of the authors' SGD recipe (``kind="multistep"``) at optimizer step `step`.

    Warm-up as `official_warmup_cosine` (``step / warmup_steps``, per iteration); then
    ``MultiStepLR(milestones, gamma)`` stepped once per epoch: epoch e after the warm-up trains at
    ``gamma ** (number of milestones <= e)`` (their configs/cifar100_general.yaml: 1 warm-up epoch, then
    200 epochs with milestones 60, 120, 160 and gamma 0.2).
    """
    if step < warmup_steps:
        return step / warmup_steps
    epoch = (step - warmup_steps) // max(1, steps_per_epoch)
    return gamma ** bisect.bisect_right(sorted(milestones), epoch)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier (``kind="per_step"``): linear from 1/(warmup+1) to 1 over `warmup_steps`,
    then a cosine to `min_ratio` over the remaining steps, per iteration."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class LRSchedule:
    """How the learning rate moves: a linear warm-up per iteration, then a decay.

    Args:
        kind: "official" (the paper: warm-up from 0, then a cosine over the remaining ``max_epochs -
            warmup_epochs`` epochs stepped once per epoch; 5 + 300 = 305 epochs), "per_step" (warm-up
            from lr/(w+1), then a cosine over the remaining iterations, per iteration) or "multistep" (the
            authors' SGD recipe for ResNets: the official warm-up, then ``MultiStepLR(milestones, gamma)``
            stepped once per epoch, milestones counted in epochs after the warm-up).
        warmup_epochs: length of the linear warm-up, in epochs (may be fractional).
        milestones, gamma: the "multistep" decay epochs and factor (the authors: 60, 120, 160; 0.2).
        min_lr_ratio: where the cosines end, as a fraction of the peak lr.
    """

    kind: ScheduleKind = "official"
    warmup_epochs: float = 5
    milestones: tuple[int, ...] = (60, 120, 160)
    gamma: float = 0.2
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        check_choice("LRSchedule", "kind", self.kind, ScheduleKind)
        object.__setattr__(self, "milestones", tuple(self.milestones))
        if not self.warmup_epochs >= 0:
            raise InputError(f"LRSchedule: warmup_epochs={self.warmup_epochs}; use >= 0 (the paper: 5)")
        if any(not isinstance(m, int) or m < 1 for m in self.milestones) or list(self.milestones) != sorted(
            set(self.milestones)
        ):
            raise InputError(
                f"LRSchedule: milestones={list(self.milestones)} must be increasing positive epochs "
                "(e.g. [60, 120, 160])"
            )
        if not self.gamma > 0:
            raise InputError(f"LRSchedule: gamma={self.gamma!r}; use > 0 (the authors: 0.2)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise InputError(f"LRSchedule: min_lr_ratio={self.min_lr_ratio!r}; use a fraction in [0, 1]")

    def factor(self, total_steps: int, max_epochs: int) -> Callable[[int], float]:
        """The peak-lr multiplier per optimizer step, for a run of `total_steps` steps over `max_epochs`
        epochs (a plain function, so `LambdaLR` stores nothing of it in checkpoints)."""
        total, epochs = max(1, int(total_steps)), max(1, int(max_epochs))
        warmup = int(round(self.warmup_epochs * total / epochs))
        steps_per_epoch = max(1, round(total / epochs))
        min_ratio = self.min_lr_ratio
        if self.kind == "official":
            cosine_epochs = max(1, epochs - int(round(self.warmup_epochs)))

            def factor(step: int) -> float:
                return official_warmup_cosine(step, warmup, steps_per_epoch, cosine_epochs, min_ratio)

        elif self.kind == "multistep":
            milestones, gamma = self.milestones, self.gamma

            def factor(step: int) -> float:
                return official_warmup_multistep(step, warmup, steps_per_epoch, milestones, gamma)

        else:

            def factor(step: int) -> float:
                return warmup_cosine(step, warmup, total, min_ratio)

        return factor

    def describe(self) -> str:
        """The schedule in a few words, for the start-up line."""
        if self.kind == "multistep":
            return f"multistep (x{self.gamma:g} after epochs {list(self.milestones)} of the post-warm-up)"
        return self.kind
