"""`ImageClassifier`: a network trained with a `Recipe`, and the clean loss analyses use.

The network is an explicit argument: a `Network` (a timm model name and its keyword arguments, what configs
and the CLI give) or an already built `nn.Module` (Python users, a loaded official checkpoint). The recipe
is a `Recipe` of frozen option groups (`alternet_pl.training.recipe`); its defaults follow the authors' code
(``ops/trains.py``, ``ops/tests.py``): AdamW decays every parameter, the learning rate warms up linearly
from 0 per iteration and then follows a cosine stepped once per epoch, ECE uses 10 equal bins and NLL is
the mean of per-batch means.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import lightning.pytorch as pl
import timm
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

import alternet_pl.models  # noqa: F401  (registers our architectures with timm)
from alternet_pl.analysis.loss import cross_entropy_loss
from alternet_pl.errors import InputError, check_choice
from alternet_pl.old_runs import FLAT_KEYS, upgrade_flat_config
from alternet_pl.training.metrics import CalibrationMetric
from alternet_pl.training.recipe import Recipe

__all__ = [
    "FLAT_KEYS",
    "MemoryFormat",
    "PAPER_RECIPE",
    "ImageClassifier",
    "Network",
    "configured_classifier",
    "create_model",
    "upgrade_flat_config",
]


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


#: how a network's 4-d weights lie in memory: "channels_last" speeds up convolutions on CPU (the CPU
#: ResNet trains 30% faster, measured); the maths is the same (outputs agree to float rounding)
MemoryFormat = Literal["contiguous", "channels_last"]


@dataclass(frozen=True)
class Network:
    """A network to build: a registered timm model name and its keyword arguments.

    Args:
        name: ours (`alternet_cifar_50`, `vit_cifar_ti`, `resnet_cifar_50`, ...) or any timm model.
        kwargs: passed to `timm.create_model` (layout, msa_per_stage, drop_path_rate, global_pool, ...).
        memory_format: "channels_last" stores 4-d weights (and so the convolutions' outputs) channels
            last, as timm's ``--channels-last``: faster convolutions, the same function.

    Raises:
        InputError: an unknown memory format.
    """

    name: str = "alternet_cifar_micro"
    kwargs: dict[str, Any] = field(default_factory=dict)
    memory_format: MemoryFormat = "contiguous"

    def __post_init__(self) -> None:
        check_choice("Network", "memory_format", self.memory_format, MemoryFormat)

    def build(self, num_classes: int) -> torch.nn.Module:
        """The model with a `num_classes`-way head, in `memory_format`. Raises `InputError` for an unknown
        name."""
        model = create_model(self.name, num_classes, **self.kwargs)
        if self.memory_format == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        return model


#: the paper's CIFAR-100 recipe, `ImageClassifier`'s default (frozen: safe to share)
PAPER_RECIPE = Recipe()


def _plain(value: Any) -> Any:
    """`value` as plain containers (tuples as lists): what hparams.yaml and weights-only checkpoints hold."""
    return json.loads(json.dumps(value))


class ImageClassifier(pl.LightningModule):
    """A classifier trained with AdamW/SGD, warm-up + decay, Mixup/CutMix and calibration metrics.

    Args:
        network: a `Network` (timm name + kwargs, built here) or an already built `nn.Module` (used as
            is, e.g. a loaded official checkpoint; it is not saved in the hyperparameters).
        num_classes: must equal the data module's.
        recipe: the `Recipe` (optimizer, schedule, targets, metrics); the default is the paper's.

    ``network`` and ``recipe`` may also be the plain dicts the hyperparameters hold, so that
    ``ImageClassifier(**hparams)`` (Lightning's ``load_from_checkpoint``) rebuilds the module.

    The module follows `alternet_pl.training.recipe.RecipeInfo` (``warmup_epochs``, ``mixup_fn``,
    ``weight_decay``): what analysis callbacks may learn of the recipe.
    """

    def __init__(
        self,
        network: Network | torch.nn.Module = Network(),
        num_classes: int = 10,
        recipe: Recipe = PAPER_RECIPE,
    ) -> None:
        super().__init__()
        if isinstance(network, Mapping):
            network = Network(**network)
        if isinstance(recipe, Mapping):
            recipe = Recipe.from_dict(dict(recipe))
        if not isinstance(network, Network | torch.nn.Module):
            raise InputError(f"network={network!r}: pass a Network(name, kwargs) or a built torch.nn.Module")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise InputError(f"num_classes={num_classes!r}; a classifier needs an integer >= 2")
        hparams: dict[str, Any] = {"num_classes": num_classes, "recipe": _plain(asdict(recipe))}
        if isinstance(network, Network):
            hparams = {"network": _plain(asdict(network)), **hparams}
        self.save_hyperparameters(hparams)
        self.model = network.build(num_classes) if isinstance(network, Network) else network
        self.num_classes = num_classes
        self.recipe = recipe
        self.mixup_fn = recipe.targets.mixer(num_classes)
        self.soft_ce = SoftTargetCrossEntropy()
        self.train_loss = MeanMetric()
        # one definition of NLL / ECE (analysis.calibration), shared with the corruption analyses
        bins, average = recipe.metrics.ece_bins, recipe.metrics.nll_average
        self.val_loss = CalibrationMetric("nll", bins, average)
        self.train_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        self.val_ece = CalibrationMetric("ece", bins, average)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ImageClassifier:
        """The module a run's ``config.yaml`` `model:` section (or a checkpoint's hyperparameters) describes:
        ``{network: {name, kwargs}, num_classes, recipe: {optimizer, schedule, targets, metrics}}``. A config
        written before the recipe groups (flat keys: ``model``, ``lr``, ``lr_schedule``, ...) is read too.

        Raises `InputError` for a missing network or an unknown key."""
        config = upgrade_flat_config(config)
        unknown = sorted(set(config) - {"network", "num_classes", "recipe"})
        if unknown or not isinstance(config.get("network"), dict):
            raise InputError(
                f"model config needs network: {{name, kwargs}} and takes only network, num_classes, recipe "
                f"(unknown: {unknown})"
            )
        network = Network(**config["network"])
        recipe = Recipe.from_dict(dict(config.get("recipe") or {}))
        return cls(network, config.get("num_classes", 10), recipe)

    # RecipeInfo: what callbacks may learn of the recipe (mixup_fn is an attribute)
    @property
    def warmup_epochs(self) -> float:
        """Length of the learning-rate warm-up in epochs (the schedule's)."""
        return self.recipe.schedule.warmup_epochs

    @property
    def weight_decay(self) -> float:
        """The training weight-decay coefficient (the optimizer's)."""
        return self.recipe.optimizer.weight_decay

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
            loss = F.cross_entropy(logits, targets, label_smoothing=self.recipe.targets.label_smoothing)
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
        datamodule = getattr(self.trainer, "datamodule", None)
        per_device = getattr(datamodule, "batch_size", None)
        if per_device is None:
            return None
        if hasattr(datamodule, "device_batch_size"):  # a faithful split of the global batch over the devices
            per_device = datamodule.device_batch_size()
        return int(per_device) * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def effective_lr(self) -> float:
        """The peak lr: the recipe's, times global batch / ``lr_reference_batch`` when a reference is set."""
        return self.recipe.optimizer.peak_lr(self.global_batch_size())

    def decay_exempt(self, name: str, param: torch.Tensor) -> bool:
        """Whether `param` gets no weight decay (the optimizer group's rule)."""
        return self.recipe.optimizer.decay_exempt(name, param)

    def configure_optimizers(self):
        """The recipe's optimizer at the peak lr, and its schedule as a per-step `LambdaLR`."""
        optimizer = self.recipe.optimizer.build(self.model.named_parameters(), self.effective_lr())
        steps, epochs = self.trainer.estimated_stepping_batches, self.trainer.max_epochs or 1
        factor = self.recipe.schedule.factor(steps, epochs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def configured_classifier(
    network: Network = Network(), num_classes: int = 10, recipe: Recipe = PAPER_RECIPE
) -> ImageClassifier:
    """`ImageClassifier(network, num_classes, recipe)` with the network as a `Network` spec only: what `fit`
    configures (a config file names a network; a built `nn.Module` is for Python callers). Same arguments,
    so configs, flags and `--help` read as `ImageClassifier`'s."""
    return ImageClassifier(network, num_classes, recipe)
