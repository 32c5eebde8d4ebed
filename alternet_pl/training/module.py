"""`ImageClassifier`: a timm model trained with the paper's recipe, and the clean loss analyses use.

By default everything follows the authors' code (``ops/trains.py``, ``ops/tests.py``): AdamW decays every
parameter, the learning rate warms up linearly from 0 per iteration and then follows a cosine stepped once
per epoch, ECE uses 10 equal bins and NLL is the mean of per-batch means. The alternatives (per-step
cosine, no decay on norms/biases/embeddings, per-sample NLL, 15-bin ECE) are one argument away.
"""

from __future__ import annotations

import bisect
import difflib
import math
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any, Literal, get_args

import lightning.pytorch as pl
import timm
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

import alternet_pl.models  # noqa: F401  (registers our architectures with timm)
from alternet_pl.analysis.loss import cross_entropy_loss
from alternet_pl.errors import InputError
from alternet_pl.training.metrics import CalibrationMetric

OPTIMIZERS = ("adamw", "sgd")
LRSchedule = Literal["official", "per_step", "multistep"]
WeightDecayOn = Literal["all", "matrices"]
NLLAverage = Literal["per_batch", "per_sample"]
_PREBUILT_MODEL: ContextVar[torch.nn.Module | None] = ContextVar("alternet_prebuilt_model", default=None)


def create_model(name: str, num_classes: int, **kwargs: Any) -> torch.nn.Module:
    """`timm.create_model` with an error that lists the closest registered names."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.5)
        ours = timm.list_models("alternet*") + timm.list_models("*cifar*")
        raise InputError(
            f"unknown model {name!r}. Closest registered names: {close or 'none'}. "
            f"alternet-pl's own models: {sorted(set(ours))}"
        )
    return timm.create_model(name, num_classes=num_classes, **kwargs)


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
    """LR multiplier of the authors' SGD recipe (``lr_schedule="multistep"``) at optimizer step `step`.

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
    """LR multiplier (``lr_schedule="per_step"``): linear from 1/(warmup+1) to 1 over `warmup_steps`,
    then a cosine to `min_ratio` over the remaining steps, per iteration."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class ImageClassifier(pl.LightningModule):
    """A timm classifier with AdamW/SGD, warm-up + cosine, Mixup/CutMix and calibration metrics.

    Args:
        model: a timm model name (ours: `alternet_cifar_50`, `vit_cifar_ti`, ...; any timm model).
        model_kwargs: passed to `timm.create_model` (layout, drop_path_rate, global_pool, ...).
        num_classes: must equal the data module's.
        optimizer: "adamw" or "sgd" (with ``momentum`` and ``nesterov``).
        lr: peak learning rate; with `lr_reference_batch` it is scaled by global batch / reference.
        weight_decay_on: "all" (the authors: every parameter decays) or "matrices" (biases, 1-D tensors,
            ``pos_embed`` and ``cls_token`` exempt).
        momentum, nesterov: SGD's (the authors' SGD recipe: 0.9, no Nesterov).
        warmup_epochs: linear warm-up length (per iteration).
        lr_schedule: "official" (the paper: warm-up from 0, then a cosine over the remaining
            ``max_epochs - warmup_epochs`` epochs stepped once per epoch; 5 + 300 = 305 epochs) or
            "per_step" (warm-up from lr/(w+1), then a cosine over the remaining iterations, per iteration).
            Both end at ``min_lr_ratio * lr``. "multistep" (the authors' SGD recipe for ResNets): the
            same warm-up, then ``MultiStepLR(lr_milestones, lr_gamma)`` stepped once per epoch, milestones
            counted in epochs after the warm-up.
        lr_milestones, lr_gamma: the "multistep" decay epochs and factor (the authors: 60, 120, 160; 0.2).
        label_smoothing, mixup_alpha, cutmix_alpha: the paper's regularisers (0 disables each).
        ece_bins: equal-width confidence bins of ``val/ece`` (the authors: 10).
        nll_average: ``val/nll`` as the mean of per-batch means ("per_batch", the authors) or over samples.
    """

    def __init__(
        self,
        model: str = "alternet_cifar_micro",
        model_kwargs: dict[str, Any] | None = None,
        num_classes: int = 10,
        optimizer: str = "adamw",
        lr: float = 1.25e-4,
        lr_reference_batch: int | None = None,
        weight_decay: float = 0.05,
        weight_decay_on: WeightDecayOn = "all",
        momentum: float = 0.9,
        nesterov: bool = False,
        warmup_epochs: float = 5,
        lr_schedule: LRSchedule = "official",
        lr_milestones: Sequence[int] = (60, 120, 160),
        lr_gamma: float = 0.2,
        min_lr_ratio: float = 0.0,
        label_smoothing: float = 0.1,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.8,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        ece_bins: int = 10,
        nll_average: NLLAverage = "per_batch",
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer {optimizer!r} not supported; choose one of {OPTIMIZERS}")
        for name, value, options in (
            ("lr_schedule", lr_schedule, LRSchedule),
            ("weight_decay_on", weight_decay_on, WeightDecayOn),
            ("nll_average", nll_average, NLLAverage),
        ):
            if value not in get_args(options):
                raise InputError(f"{name}={value!r}; valid values are {get_args(options)}")
        lr_milestones = list(lr_milestones)  # before save_hyperparameters: a list in hparams.yaml
        if any(not isinstance(m, int) or m < 1 for m in lr_milestones) or lr_milestones != sorted(
            set(lr_milestones)
        ):
            raise InputError(
                f"lr_milestones={lr_milestones} must be increasing positive epochs (e.g. [60, 120, 160])"
            )
        if not lr_gamma > 0:
            raise InputError(f"lr_gamma={lr_gamma!r} must be > 0 (the authors: 0.2)")
        if not isinstance(ece_bins, int) or ece_bins < 1:
            raise InputError(f"ece_bins={ece_bins!r} must be a positive integer (the authors use 10)")
        self.save_hyperparameters()
        prebuilt = _PREBUILT_MODEL.get()
        self.model = (
            prebuilt if prebuilt is not None else create_model(model, num_classes, **(model_kwargs or {}))
        )
        self.num_classes = num_classes
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.mixup_fn: Mixup | None = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            self.mixup_fn = Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                prob=mixup_prob,
                switch_prob=mixup_switch_prob,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
        self.soft_ce = SoftTargetCrossEntropy()
        self.train_loss = MeanMetric()
        # one definition of NLL / ECE (analysis.calibration), shared with the corruption analyses
        self.val_loss = CalibrationMetric("nll", ece_bins, nll_average)
        self.train_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        self.val_ece = CalibrationMetric("ece", ece_bins, nll_average)

    @classmethod
    def with_model(cls, network: torch.nn.Module, **kwargs: Any) -> ImageClassifier:
        """An `ImageClassifier` around the already built ``network`` (it is not built a second time, e.g. a
        loaded official checkpoint); ``kwargs`` are the constructor's, ``model`` naming its architecture."""
        token = _PREBUILT_MODEL.set(network)
        try:
            return cls(**kwargs)
        finally:
            _PREBUILT_MODEL.reset(token)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def setup(self, stage: str) -> None:
        data_classes = getattr(getattr(self.trainer, "datamodule", None), "num_classes", None)
        if data_classes is not None and data_classes != self.num_classes:
            raise InputError(
                f"model.num_classes={self.num_classes} but the data has {data_classes} classes; "
                f"set --model.num_classes={data_classes}"
            )

    def eval_loss(self, batch) -> torch.Tensor:
        """Clean mean cross-entropy on a batch: no augmentation, no smoothing (what analyses use)."""
        return cross_entropy_loss(self.model, batch)[0]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        targets = labels
        if self.mixup_fn is not None and len(labels) % 2 == 0:
            images, targets = self.mixup_fn(images, labels)
        logits = self.model(images)
        if targets.ndim == 2:
            loss = self.soft_ce(logits, targets)
        else:
            loss = F.cross_entropy(logits, targets, label_smoothing=self.hparams.label_smoothing)
        self.train_loss(loss.detach())
        self.train_acc1(logits.detach(), labels)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc1", self.train_acc1, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        self.val_loss(logits, labels)
        self.val_acc1(logits, labels)
        self.val_acc5(logits, labels)
        self.val_ece(logits, labels)
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/nll", self.val_loss)
        self.log("val/acc1", self.val_acc1, prog_bar=True)
        self.log("val/acc5", self.val_acc5)
        self.log("val/ece", self.val_ece)

    def test_step(self, batch, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def global_batch_size(self) -> int | None:
        """Images per optimizer step: per-device batch x devices x gradient accumulation (None: unknown)."""
        per_device = getattr(getattr(self.trainer, "datamodule", None), "batch_size", None)
        if per_device is None:
            return None
        return int(per_device) * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def effective_lr(self) -> float:
        """The peak lr: ``lr``, times global batch / ``lr_reference_batch`` when a reference is set."""
        lr = self.hparams.lr
        ref = self.hparams.lr_reference_batch
        if ref:
            lr = lr * (self.global_batch_size() or ref) / ref
        return lr

    def on_fit_start(self) -> None:
        """Print the effective global batch size and peak learning rate (what a recipe must match)."""
        batch = self.global_batch_size()
        per_device = getattr(getattr(self.trainer, "datamodule", None), "batch_size", "?")
        ref = self.hparams.lr_reference_batch
        scaled = f" (lr {self.hparams.lr:g} x {batch}/{ref})" if ref else ""
        decay = ""
        if self.hparams.lr_schedule == "multistep":
            decay = (
                f" (x{self.hparams.lr_gamma:g} after epochs {self.hparams.lr_milestones} of the post-warm-up)"
            )
        rank_zero_info(
            f"alternet-pl: global batch size {batch if batch is not None else 'unknown'} = {per_device} per "
            f"device x {self.trainer.world_size} device(s) x {self.trainer.accumulate_grad_batches} "
            f"accumulation; peak lr {self.effective_lr():.6g}{scaled}; schedule {self.hparams.lr_schedule}"
            f"{decay}, "
            f"{self.warmup_epochs:g} warm-up epochs of {self.trainer.max_epochs}"
        )

    def decay_exempt(self, name: str, param: torch.Tensor) -> bool:
        """Whether `param` gets no weight decay: never with ``weight_decay_on="all"`` (the authors)."""
        if self.hparams.weight_decay_on == "all":
            return False
        return param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "cls_token" in name

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if self.decay_exempt(name, param) else decay).append(param)
        groups = [{"params": decay, "weight_decay": self.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        lr = self.effective_lr()
        if self.hparams.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=lr)
        else:
            optimizer = torch.optim.SGD(
                groups, lr=lr, momentum=self.hparams.momentum, nesterov=self.hparams.nesterov
            )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, self.trainer.max_epochs or 1)
        warmup = int(round(self.warmup_epochs * total / epochs))
        min_ratio = self.hparams.min_lr_ratio
        steps_per_epoch = max(1, round(total / epochs))
        if self.hparams.lr_schedule == "official":
            cosine_epochs = max(1, epochs - int(round(self.warmup_epochs)))

            def factor(step: int) -> float:
                return official_warmup_cosine(step, warmup, steps_per_epoch, cosine_epochs, min_ratio)

        elif self.hparams.lr_schedule == "multistep":
            milestones, gamma = tuple(self.hparams.lr_milestones), self.hparams.lr_gamma

            def factor(step: int) -> float:
                return official_warmup_multistep(step, warmup, steps_per_epoch, milestones, gamma)

        else:

            def factor(step: int) -> float:
                return warmup_cosine(step, warmup, total, min_ratio)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
