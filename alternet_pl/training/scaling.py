"""The same recipe on any number of devices: how a global batch is split, and what a fit says at start-up.

`fit --scaling faithful` (the default) keeps the experiment's recipe whatever the hardware: the data
module's ``batch_size`` is the *global* batch, each of the N devices (x gradient accumulation) loads
``batch_size / N``, the lr is the experiment's, and with `configs/trainer/ddp.yaml` BatchNorm is
synchronised and precision stays 32-true. `fit --scaling fast` (`configs/trainer/fast.yaml`) lets every
device load the whole ``batch_size``: the global batch and, through ``lr_reference_batch``, the lr grow
with N. `ScaleReport` prints one line at the start of every fit saying which of the two it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from alternet_pl.errors import InputError
from alternet_pl.training.sync_batchnorm import GlobalBatchNorm

__all__ = [
    "PAPER_PRECISION",
    "ScaleReport",
    "Scaling",
    "ScaleSummary",
    "config_world_size",
    "device_batch_size",
    "startup_line",
]

Scaling = Literal["faithful", "fast"]
#: BatchNorm layers whose statistics cover the global batch (torch's on GPUs, ours on CPU processes)
_SYNCED_BATCHNORM = (torch.nn.SyncBatchNorm, GlobalBatchNorm)
#: the authors trained in fp32
PAPER_PRECISION = "32-true"


def device_batch_size(
    batch_size: int, world_size: int, accumulation: int = 1, scaling: Scaling = "faithful"
) -> int:
    """Images one device loads per step: ``batch_size / (world_size x accumulation)`` ("faithful": the
    global batch stays ``batch_size``) or ``batch_size`` ("fast": the global batch grows with the devices).

    Raises `InputError` when a faithful split does not divide.
    """
    if scaling not in get_args(Scaling):
        raise InputError(f"scaling={scaling!r}; choose one of {get_args(Scaling)}")
    if scaling == "fast":
        return batch_size
    shares = world_size * accumulation
    if batch_size % shares:
        raise InputError(
            f"the global batch {batch_size} does not split over {world_size} device(s) x {accumulation} "
            f"accumulation step(s) ({batch_size}/{shares} is not whole); use a device count that divides "
            f"{batch_size}, or --scaling fast (every device loads {batch_size}; global batch and lr grow)"
        )
    return batch_size // shares


def _device_count(devices: Any, accelerator: str) -> int:
    """Devices per node of a Trainer `devices` value as Lightning resolves it, before the Trainer exists."""
    if isinstance(devices, list | tuple):
        return len(devices)
    text = str(devices if devices is not None else "auto").strip()
    if text.lstrip("-").isdigit() and int(text) > 0:
        return int(text)
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return max(1, torch.cuda.device_count()) if gpu else 1  # "auto" / -1: all GPUs, or one CPU process


def config_world_size(trainer_config: dict[str, Any]) -> int:
    """The number of processes a trainer config will train on (nodes x devices per node)."""
    accelerator = str(trainer_config.get("accelerator") or "auto")
    nodes = int(trainer_config.get("num_nodes") or 1)
    return nodes * _device_count(trainer_config.get("devices", "auto"), accelerator)


@dataclass(frozen=True)
class ScaleSummary:
    """What a fit trains with, beside what the experiment's recipe asks for."""

    devices: int
    device_batch: int
    accumulation: int
    lr: float
    precision: str
    bn_images: int | None  # images per BatchNorm statistic (None: the model has no BatchNorm)
    recipe_batch: int
    recipe_lr: float
    scaling: Scaling
    lr_rule: str = ""  # how the peak lr follows from the recipe's, e.g. "1.25e-4 x 128/96" ("": as set)
    schedule: str = ""  # the schedule and its warm-up, e.g. "official, 1 warm-up epoch(s) of 300"

    @property
    def global_batch(self) -> int:
        return self.devices * self.device_batch * self.accumulation

    def differences(self) -> list[str]:
        """Each way this run departs from the experiment's recipe, as a phrase (empty: faithful)."""
        found = []
        if self.global_batch != self.recipe_batch:
            found.append(f"global batch {self.global_batch} instead of {self.recipe_batch}")
        if abs(self.lr - self.recipe_lr) > 1e-12 * max(1.0, abs(self.recipe_lr)):
            found.append(f"peak lr {self.lr:.6g} instead of {self.recipe_lr:.6g}")
        if self.precision != PAPER_PRECISION:
            found.append(f"precision {self.precision} instead of {PAPER_PRECISION}")
        if self.bn_images is not None and self.bn_images != self.recipe_batch:
            found.append(f"BatchNorm statistics over {self.bn_images} images instead of {self.recipe_batch}")
        return found


def startup_line(summary: ScaleSummary) -> str:
    """`devices x per-device batch = global batch, peak lr, precision[, schedule]`, and whether it is the
    recipe: the one line every fit prints."""
    accumulation = f" x {summary.accumulation} accumulation" if summary.accumulation > 1 else ""
    lr_rule = f" (= {summary.lr_rule})" if summary.lr_rule else ""
    schedule = f", schedule {summary.schedule}" if summary.schedule else ""
    head = (
        f"alternet-pl: {summary.devices} device(s) x {summary.device_batch} per device{accumulation} = "
        f"global batch {summary.global_batch}, peak lr {summary.lr:.6g}{lr_rule}, precision "
        f"{summary.precision}{schedule}"
    )
    differences = summary.differences()
    if not differences:
        return f"{head}; the experiment's recipe as its authors ran it (scaling {summary.scaling})"
    return f"{head}; NOT the experiment's recipe (scaling {summary.scaling}): " + ", ".join(differences) + "."


def _bn_images(
    model: torch.nn.Module, device_batch: int, global_batch: int, synchronised: bool
) -> int | None:
    """Images each BatchNorm statistic is computed over (None when the model has no BatchNorm)."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None
    return global_batch if synchronised else device_batch


def _peak_lrs(module: pl.LightningModule, global_batch: int, recipe_batch: int) -> tuple[float, float, str]:
    """(this run's peak lr, the experiment's at its own global batch, how the first follows from the
    recipe): the module's recipe scales the lr with the global batch (`lr_reference_batch`); a module
    without one trains at its `lr` hparam."""
    optimizer = getattr(getattr(module, "recipe", None), "optimizer", None)
    if hasattr(optimizer, "peak_lr"):
        reference = optimizer.lr_reference_batch
        rule = (
            f"{optimizer.lr:g} x {global_batch}/{reference}"
            if reference and reference != global_batch
            else ""
        )
        return float(optimizer.peak_lr(global_batch)), float(optimizer.peak_lr(recipe_batch)), rule
    lr = float(getattr(module, "hparams", {}).get("lr", float("nan")))
    return lr, lr, ""


def _schedule(module: pl.LightningModule, max_epochs: int | None) -> str:
    """The module's schedule and warm-up in a few words ("" for a module without a recipe schedule)."""
    schedule = getattr(getattr(module, "recipe", None), "schedule", None)
    if not hasattr(schedule, "describe"):
        return ""
    of = f" of {max_epochs}" if max_epochs and max_epochs > 0 else ""
    return f"{schedule.describe()}, {schedule.warmup_epochs:g} warm-up epoch(s){of}"


class ScaleReport(pl.Callback):
    """Print the start-up line (rank 0, once) once the Trainer knows its devices and precision.

    Args:
        scaling: "faithful" or "fast" (how the data module splits its batch).
    """

    def __init__(self, scaling: Scaling = "faithful") -> None:
        self.scaling = scaling
        self.summary: ScaleSummary | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        batch_size = getattr(datamodule, "batch_size", None)
        if batch_size is None:
            return
        world, accumulation = trainer.world_size, trainer.accumulate_grad_batches
        per_device = device_batch_size(int(batch_size), world, accumulation, self.scaling)
        global_batch = world * per_device * accumulation
        scaled_lr, recipe_lr, lr_rule = _peak_lrs(pl_module, global_batch, int(batch_size))
        synchronised = any(isinstance(m, _SYNCED_BATCHNORM) for m in pl_module.modules())
        self.summary = ScaleSummary(
            devices=world,
            device_batch=per_device,
            accumulation=accumulation,
            lr=scaled_lr,
            precision=str(trainer.precision),
            bn_images=_bn_images(pl_module, per_device, world * per_device, synchronised or world == 1),
            recipe_batch=int(batch_size),
            recipe_lr=recipe_lr,
            scaling=self.scaling,
            lr_rule=lr_rule,
            schedule=_schedule(pl_module, trainer.max_epochs),
        )
        rank_zero_info(startup_line(self.summary))
