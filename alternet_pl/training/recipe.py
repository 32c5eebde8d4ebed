"""The training recipe as frozen option groups, and `RecipeInfo`: what a callback may learn of it.

`Recipe` bundles four groups that validate themselves on construction (one line naming the option):
`OptimizerOptions` (which optimizer, its lr and weight decay), `LRSchedule` (warm-up and decay, in
`training.schedules`), `TargetOptions` (label smoothing, Mixup / CutMix) and `MetricOptions` (how
``val/nll`` and ``val/ece`` are defined). jsonargparse shows them as nested groups
(``--model.recipe.optimizer.lr``), and a recipe file (``configs/recipe/*.yaml``) fills them at once. The
defaults are the paper's CIFAR-100 recipe (the authors' ``configs/cifar100_vit.yaml``, ``ops/tests.py``).

Callbacks schedule "at the end of warm-up", draw augmented batches through the training Mixup/CutMix, and
follow the training weight decay (`coefficient: train`). They read these three facts through the
`RecipeInfo` Protocol instead of reaching into the LightningModule's attributes; any module that has them
(ours, or a user's) qualifies, and a module without them gets the plain defaults (no warm-up, no Mixup, no
decay).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from timm.data import Mixup

from alternet_pl.analysis.calibration import ECE_BINS, NLLAverage
from alternet_pl.errors import InputError, check_choice
from alternet_pl.training.schedules import LRSchedule

__all__ = [
    "MetricOptions",
    "OptimizerName",
    "OptimizerOptions",
    "Recipe",
    "RecipeInfo",
    "TargetOptions",
    "WeightDecayOn",
    "recipe_info",
]

OptimizerName = Literal["adamw", "sgd"]
WeightDecayOn = Literal["all", "matrices"]


@dataclass(frozen=True)
class OptimizerOptions:
    """The optimizer and what it decays.

    Args:
        name: "adamw" or "sgd" (with ``momentum`` and ``nesterov``; the authors' SGD: 0.9, no Nesterov).
        lr: peak learning rate; with `lr_reference_batch` it is scaled by global batch / reference.
        lr_reference_batch: the global batch `lr` is meant for (None: no scaling).
        weight_decay: the decay coefficient (AdamW's decoupled decay, SGD's L2 term).
        weight_decay_on: "all" (the authors: every parameter decays) or "matrices" (biases, 1-D tensors,
            ``pos_embed`` and ``cls_token`` exempt).
        momentum, nesterov: SGD's.
    """

    name: OptimizerName = "adamw"
    lr: float = 1.25e-4
    lr_reference_batch: int | None = None
    weight_decay: float = 0.05
    weight_decay_on: WeightDecayOn = "all"
    momentum: float = 0.9
    nesterov: bool = False

    def __post_init__(self) -> None:
        check_choice("OptimizerOptions", "name", self.name, OptimizerName)
        check_choice("OptimizerOptions", "weight_decay_on", self.weight_decay_on, WeightDecayOn)
        if not self.lr > 0:
            raise InputError(f"OptimizerOptions: lr={self.lr!r}; use a peak learning rate > 0")
        if self.lr_reference_batch is not None and self.lr_reference_batch < 1:
            raise InputError(
                f"OptimizerOptions: lr_reference_batch={self.lr_reference_batch}; use >= 1 or None"
            )
        if not self.weight_decay >= 0:
            raise InputError(f"OptimizerOptions: weight_decay={self.weight_decay!r}; use >= 0")
        if not 0 <= self.momentum < 1 or (self.nesterov and self.momentum == 0):
            raise InputError(
                f"OptimizerOptions: momentum={self.momentum!r}, nesterov={self.nesterov}; need 0 <= momentum"
                " < 1, and momentum > 0 for Nesterov"
            )

    def peak_lr(self, global_batch: int | None) -> float:
        """`lr`, times global batch / `lr_reference_batch` when a reference is set (None: unknown batch)."""
        if not self.lr_reference_batch:
            return self.lr
        return self.lr * (global_batch or self.lr_reference_batch) / self.lr_reference_batch

    def decay_exempt(self, name: str, param: torch.Tensor) -> bool:
        """Whether `param` gets no weight decay: never with ``weight_decay_on="all"`` (the authors)."""
        if self.weight_decay_on == "all":
            return False
        return param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "cls_token" in name

    def build(self, named_parameters: Iterable[tuple[str, torch.Tensor]], lr: float) -> torch.optim.Optimizer:
        """The optimizer over the trainable parameters at peak `lr`: one decayed group, plus a group
        without decay for the exempt parameters when there are any."""
        decay, no_decay = [], []
        for name, param in named_parameters:
            if param.requires_grad:
                (no_decay if self.decay_exempt(name, param) else decay).append(param)
        groups = [{"params": decay, "weight_decay": self.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        if self.name == "adamw":
            return torch.optim.AdamW(groups, lr=lr)
        return torch.optim.SGD(groups, lr=lr, momentum=self.momentum, nesterov=self.nesterov)


@dataclass(frozen=True)
class TargetOptions:
    """How training targets are made: label smoothing, then Mixup / CutMix (0 disables each).

    Args:
        label_smoothing: the smoothing of every training target, mixed or not (the paper: 0.1).
        mixup_alpha, cutmix_alpha: Beta parameters of Mixup and CutMix (the paper: 1.0, 0.8).
        mixup_prob: probability that a batch is mixed at all.
        mixup_switch_prob: probability of CutMix instead of Mixup when both are on.
    """

    label_smoothing: float = 0.1
    mixup_alpha: float = 1.0
    cutmix_alpha: float = 0.8
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.label_smoothing < 1:
            raise InputError(f"TargetOptions: label_smoothing={self.label_smoothing!r}; use [0, 1)")
        if not (self.mixup_alpha >= 0 and self.cutmix_alpha >= 0):
            raise InputError(
                f"TargetOptions: mixup_alpha={self.mixup_alpha!r}, cutmix_alpha={self.cutmix_alpha!r}; "
                "use >= 0 (0 disables)"
            )
        for name in ("mixup_prob", "mixup_switch_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"TargetOptions: {name}={getattr(self, name)!r}; use a probability")

    def mixer(self, num_classes: int) -> Mixup | None:
        """timm's `Mixup` (soft, smoothed targets) for `num_classes`, or None when both alphas are 0."""
        if self.mixup_alpha <= 0 and self.cutmix_alpha <= 0:
            return None
        return Mixup(
            mixup_alpha=self.mixup_alpha,
            cutmix_alpha=self.cutmix_alpha,
            prob=self.mixup_prob,
            switch_prob=self.mixup_switch_prob,
            label_smoothing=self.label_smoothing,
            num_classes=num_classes,
        )


@dataclass(frozen=True)
class MetricOptions:
    """How the validation metrics are defined (the authors' ``ops/tests.py`` by default).

    Args:
        ece_bins: equal-width confidence bins of ``val/ece`` (the authors: 10).
        nll_average: ``val/nll`` as the mean of per-batch means ("per_batch", the authors) or over samples.
    """

    ece_bins: int = ECE_BINS
    nll_average: NLLAverage = "per_batch"

    def __post_init__(self) -> None:
        if not isinstance(self.ece_bins, int) or self.ece_bins < 1:
            raise InputError(
                f"MetricOptions: ece_bins={self.ece_bins!r}; use an integer >= 1 (the authors: 10)"
            )
        check_choice("MetricOptions", "nll_average", self.nll_average, NLLAverage)


@dataclass(frozen=True)
class Recipe:
    """Everything about training besides the network and the data: four option groups.

    Args:
        optimizer: `OptimizerOptions` (AdamW, lr 1.25e-4, weight decay 0.05 on every parameter).
        schedule: `LRSchedule` (5 warm-up epochs from 0 per iteration, then a cosine stepped per epoch).
        targets: `TargetOptions` (label smoothing 0.1, Mixup 1.0, CutMix 0.8).
        metrics: `MetricOptions` (10-bin ECE, NLL as the mean of per-batch means).
    """

    optimizer: OptimizerOptions = field(default_factory=OptimizerOptions)
    schedule: LRSchedule = field(default_factory=LRSchedule)
    targets: TargetOptions = field(default_factory=TargetOptions)
    metrics: MetricOptions = field(default_factory=MetricOptions)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        """A recipe from its nested dict (a config file's `recipe:` section, a checkpoint's hparams).

        Raises `InputError` naming an unknown group or option."""
        groups = {"optimizer": OptimizerOptions, "schedule": LRSchedule, "targets": TargetOptions}
        groups["metrics"] = MetricOptions
        unknown = sorted(set(values) - set(groups))
        if unknown:
            raise InputError(f"recipe: unknown group(s) {unknown}; the groups are {list(groups)}")
        built = {}
        for name, value in values.items():
            try:
                built[name] = groups[name](**dict(value or {}))
            except TypeError as err:
                raise InputError(f"recipe.{name}: {err}; see python -m alternet_pl.fit --help") from None
        return cls(**built)


@runtime_checkable
class RecipeInfo(Protocol):
    """The recipe facts a callback may read: warm-up length, the batch mixer, the training weight decay."""

    @property
    def warmup_epochs(self) -> int: ...

    @property
    def mixup_fn(self) -> Callable[[Any, Any], tuple[Any, Any]] | None: ...

    @property
    def weight_decay(self) -> float: ...


class _NoRecipe:
    """The defaults for a module that does not describe its recipe."""

    warmup_epochs = 0
    mixup_fn = None
    weight_decay = 0.0


def recipe_info(module: object) -> RecipeInfo:
    """`module` itself when it follows `RecipeInfo`, else the defaults (no warm-up, no Mixup, no decay)."""
    return module if isinstance(module, RecipeInfo) else _NoRecipe()
