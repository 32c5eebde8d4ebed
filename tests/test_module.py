"""ImageClassifier: schedule, metrics, mixup and optimisation against closed forms and hand computations."""

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from alternet_pl.data import SyntheticDataModule
from alternet_pl.module import ImageClassifier, create_model, warmup_cosine


def test_warmup_cosine_closed_form():
    w, T = 10, 110
    assert warmup_cosine(0, w, T) == pytest.approx(1 / 11)
    assert warmup_cosine(4, w, T) == pytest.approx(5 / 11)
    assert warmup_cosine(10, w, T) == pytest.approx(1.0)
    assert warmup_cosine(60, w, T) == pytest.approx(0.5)  # half-way through the cosine
    assert warmup_cosine(35, w, T) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert warmup_cosine(110, w, T, min_ratio=0.1) == pytest.approx(0.1)


class _LRRecorder(pl.Callback):
    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_scheduler_steps_per_iteration_with_the_closed_form(tmp_path):
    dm = SyntheticDataModule(num_train=64, num_val=16, batch_size=16, auto_augment=None)
    module = ImageClassifier(
        model="resnet_cifar_micro", lr=1e-3, warmup_epochs=1, mixup_alpha=0, cutmix_alpha=0
    )
    rec = _LRRecorder()
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[rec],
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    steps_per_epoch, total = 4, 12
    expected = []
    for s in range(total):  # warm-up: (s+1)/(w+1); cosine after, written out independently
        f = (
            (s + 1) / (steps_per_epoch + 1)
            if s < steps_per_epoch
            else 0.5 * (1 + math.cos(math.pi * (s - steps_per_epoch) / (total - steps_per_epoch)))
        )
        expected.append(1e-3 * f)
    assert rec.lrs == pytest.approx(expected, rel=1e-9)


class _Logits(nn.Module):
    """A 'model' whose input is its logits: lets the metrics see a hand-built batch."""

    def forward(self, x):
        return x


def test_nll_and_ece_equal_hand_computation():
    module = ImageClassifier(model="resnet_cifar_micro", num_classes=3, mixup_alpha=0, cutmix_alpha=0)
    module.model = _Logits()
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.34, 0.33, 0.33]])
    labels = torch.tensor([0, 1, 1, 2])
    logits = probs.log()
    module.validation_step((logits, labels), 0)
    nll = -(probs[torch.arange(4), labels].log()).mean()
    assert module.val_loss.compute() == pytest.approx(float(nll), rel=1e-6)
    # ECE, 15 equal-width bins over confidence: confidences .9 (right), .6 (wrong), .7 (right), .34 (wrong)
    # each in its own bin -> sum_b n_b/N * |acc_b - conf_b|
    ece = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.7) + abs(0 - 0.34)) / 4
    assert module.val_ece.compute() == pytest.approx(ece, rel=1e-5)
    assert module.val_acc1.compute() == pytest.approx(0.5)


def test_mixup_targets_sum_to_one():
    module = ImageClassifier(
        model="resnet_cifar_micro", num_classes=10, mixup_alpha=1.0, cutmix_alpha=0.8, label_smoothing=0.1
    )
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    mixed_x, targets = module.mixup_fn(x, y)
    assert targets.shape == (8, 10)
    assert torch.allclose(targets.sum(1), torch.ones(8))
    assert mixed_x.shape == x.shape


def test_one_optimizer_step_lowers_the_loss():
    torch.manual_seed(0)
    module = ImageClassifier(model="alternet_cifar_micro", lr=1e-3, mixup_alpha=0, cutmix_alpha=0)
    module.model.eval()  # fixed BN statistics so the two losses are comparable
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    before = module.eval_loss((x, y))
    before.backward()
    opt.step()
    with torch.no_grad():
        after = module.eval_loss((x, y))
    assert after < before


def test_unknown_model_lists_close_names():
    with pytest.raises(ValueError, match=r"unknown model 'alternet_cifar_5'.*alternet_cifar_50"):
        create_model("alternet_cifar_5", num_classes=10)


def test_num_classes_mismatch_is_an_error(tmp_path):
    dm = SyntheticDataModule(num_train=32, num_val=16, batch_size=16, num_classes=10)
    module = ImageClassifier(model="resnet_cifar_micro", num_classes=7)
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(ValueError, match="num_classes=7 but the data has 10"):
        trainer.fit(module, datamodule=dm)
