"""Training rows: our Lightning step against a plain PyTorch loop on the same model, data and optimizer,
and the synthetic data's throughput against what the model consumes.

Both sides start from the same seeded `ImageClassifier` weights, read the same `SyntheticDataModule`
loader, use AdamW with decay on every parameter (the module's default) and a warm-up/cosine LambdaLR,
and are timed
from the start of step `warmup` to the end of the last step (Lightning fetches one batch ahead, so the
plain loop fetches one more batch inside its timed region too). Repetitions alternate the order.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from alternet_pl.data import SyntheticDataModule
from alternet_pl.training.module import ImageClassifier, Network
from alternet_pl.training.recipe import OptimizerOptions, Recipe, TargetOptions
from alternet_pl.training.schedules import LRSchedule, warmup_cosine
from benchmarks.table import Clock, Row, ratios

SECTION = "Training"


def _module(model: str, num_classes: int = 10, seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    recipe = Recipe(
        optimizer=OptimizerOptions(name="adamw", lr=1e-3, weight_decay=0.05),
        schedule=LRSchedule(warmup_epochs=1),
        targets=TargetOptions(label_smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0),
    )
    return ImageClassifier(Network(model), num_classes, recipe)


def _data(batch_size: int, steps: int, num_classes: int = 10, workers: int = 0) -> SyntheticDataModule:
    dm = SyntheticDataModule(
        num_train=batch_size * (steps + 2),
        num_val=batch_size,
        num_classes=num_classes,
        batch_size=batch_size,
        num_workers=workers,
        seed=0,
    )
    dm.setup("fit")
    return dm


class _StepTimer(pl.Callback):
    """Reads the clock at the start of step `warmup` and the end of step `last` only: a CUDA clock
    synchronises there and nowhere else, as the plain loop does."""

    def __init__(self, warmup: int, last: int, clock: str) -> None:
        self.warmup, self.last, self.clock = warmup, last, clock
        self.start = self.end = 0.0

    def now(self) -> float:
        return Clock(self.clock).now()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = self.now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.last:
            self.end = self.now()


def lightning_steps(
    model: str,
    dm: SyntheticDataModule,
    steps: int,
    warmup: int,
    clock: str,
    accelerator: str = "cpu",
    precision: str = "32-true",
    strategy: str = "auto",
    num_classes: int = 10,
    devices: int = 1,
) -> float:
    """Seconds per step of `Trainer.fit` on `ImageClassifier` (steps after `warmup`; on rank 0)."""
    module = _module(model, num_classes)
    timer = _StepTimer(warmup, steps - 1, clock)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        max_steps=steps,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=dm)
    if timer.end <= timer.start:
        raise RuntimeError(f"the timer missed step {warmup} or {steps - 1}: fewer batches than steps?")
    return (timer.end - timer.start) / (steps - warmup)


def plain_steps(
    model: str,
    dm: SyntheticDataModule,
    steps: int,
    warmup: int,
    clock: str,
    device: str = "cpu",
    bf16: bool = False,
    num_classes: int = 10,
) -> float:
    """Seconds per step of a hand-written loop: same model, loader, optimizer groups and schedule."""
    net = _module(model, num_classes).model.to(device).train()
    groups = [{"params": [p for p in net.parameters() if p.requires_grad], "weight_decay": 0.05}]
    opt = torch.optim.AdamW(groups, lr=1e-3)
    total = len(dm.train_dataloader())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, total))
    it = iter(dm.train_dataloader())
    clk = Clock(clock)
    start = 0.0
    for i in range(steps):
        x, y = next(it)
        if i == warmup:
            start = clk.now()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if i == steps - 1:
            next(it)  # Lightning fetches one batch ahead
    return (clk.now() - start) / (steps - warmup)


def data_seconds_per_batch(dm: SyntheticDataModule, batches: int, clock: str) -> float:
    """Seconds to produce one training batch (decode, augment, collate), nothing else."""
    it = iter(dm.train_dataloader())
    next(it)
    with Clock(clock) as c:
        for _ in range(batches):
            next(it)
    return c.seconds / batches


def training_rows(model: str, batch_size: int, steps: int, warmup: int, repeats: int, log) -> list[Row]:
    dm = _data(batch_size, steps)
    ours, plain, data = [], [], []
    for rep in range(repeats):
        order = ("ours", "plain") if rep % 2 == 0 else ("plain", "ours")
        for side in order:
            fn = lightning_steps if side == "ours" else plain_steps
            (ours if side == "ours" else plain).append(fn(model, dm, steps, warmup, "cpu"))
        data.append(data_seconds_per_batch(dm, steps - warmup, "cpu"))
    ms = lambda xs: f"{1e3 * sorted(xs)[len(xs) // 2]:.1f} ms/step"  # noqa: E731
    rows = [
        Row(
            SECTION,
            f"{model} Lightning step / plain PyTorch step (batch {batch_size}, AdamW)",
            ms(ours),
            f"plain loop {ms(plain)}",
            ratios(ours, plain),
            goal=1.05,
        ),
        Row(
            SECTION,
            f"synthetic data throughput / what {model} consumes (images/s)",
            f"{batch_size / sorted(data)[len(data) // 2]:.0f} img/s",
            f"model consumes {batch_size / sorted(plain)[len(plain) // 2]:.0f} img/s",
            ratios(plain, data),
            goal=1.0,
            better="higher",
            note="one loader process (num_workers=0), CIFAR-style transforms; > 1 means data keeps up",
        ),
    ]
    log(f"  training: Lightning {ms(ours)}, plain {ms(plain)}, data {ms(data)} per batch")
    return rows
