"""ImageClassifier: schedule, metrics, mixup and optimisation against closed forms and hand computations."""

import math
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from alternet_pl.data import SyntheticDataModule
from alternet_pl.training.module import ImageClassifier, Network, create_model
from alternet_pl.training.recipe import MetricOptions, OptimizerOptions, Recipe, TargetOptions
from alternet_pl.training.scaling import ScaleReport
from alternet_pl.training.schedules import (
    LRSchedule,
    official_warmup_cosine,
    official_warmup_multistep,
    warmup_cosine,
)

NO_MIXING = TargetOptions(mixup_alpha=0, cutmix_alpha=0)  # label smoothing 0.1 stays


def classifier(name: str = "resnet_cifar_micro", num_classes: int = 10, **groups) -> ImageClassifier:
    """An `ImageClassifier` of a registered network with the paper's recipe, `groups` replaced."""
    return ImageClassifier(Network(name), num_classes, Recipe(**groups))


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


def _fit_recording_lrs(module, tmp_path, max_epochs, num_train=64, batch_size=16, callbacks=()):
    dm = SyntheticDataModule(num_train=num_train, num_val=16, batch_size=batch_size, auto_augment=None)
    rec = _LRRecorder()
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[rec, *callbacks],
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    return rec


def test_scheduler_steps_per_iteration_with_the_closed_form(tmp_path):
    module = classifier(
        optimizer=OptimizerOptions(lr=1e-3),
        schedule=LRSchedule(kind="per_step", warmup_epochs=1),
        targets=NO_MIXING,
    )
    rec = _fit_recording_lrs(module, tmp_path, max_epochs=3)
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


def official_loop_lrs(base_lr, warmup_epochs, cosine_epochs, steps_per_epoch):
    """The authors' training loop (ops/trains.py) replayed with torch's own schedulers on a dummy optimizer:
    a warm-up scheduler (lr * last_epoch / iters) stepped per iteration, then CosineAnnealingLR(T_max)
    stepped once per epoch. Returns the lr every iteration trains with."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cosine_epochs, eta_min=0)
    iters = warmup_epochs * steps_per_epoch
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: i / iters)
    lrs = []
    for _ in range(warmup_epochs):
        for _ in range(steps_per_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            warmup.step()
    for _ in range(cosine_epochs):
        for _ in range(steps_per_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
        cosine.step()
    return lrs


def test_official_schedule_equals_the_authors_loop(tmp_path):
    """Default: warm-up from 0 per iteration, then a cosine stepped per epoch; 2 + 3 epochs of 4 steps."""
    module = classifier(
        optimizer=OptimizerOptions(lr=1e-3), schedule=LRSchedule(warmup_epochs=2), targets=NO_MIXING
    )
    rec = _fit_recording_lrs(module, tmp_path, max_epochs=5)
    expected = official_loop_lrs(1e-3, warmup_epochs=2, cosine_epochs=3, steps_per_epoch=4)
    assert len(expected) == 20 and expected[0] == 0.0 and expected[8] == pytest.approx(1e-3)
    assert rec.lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert rec.lrs[8:12] == [rec.lrs[8]] * 4  # constant within an epoch after the warm-up
    # the closed form at the paper's length: epoch 150 of 300 after the warm-up is at half the peak
    assert official_warmup_cosine(5 * 10 + 150 * 10, 50, 10, 300) == pytest.approx(0.5)
    assert official_warmup_cosine(25, 50, 10, 300) == pytest.approx(0.5)


def authors_sgd_loop_lrs(base_lr, warmup_epochs, epochs, steps_per_epoch, milestones, gamma):
    """The authors' SGD recipe loop (ops/trains.py, configs/cifar100_general.yaml) replayed with torch's own
    schedulers: warm-up lr * last_epoch / iters per iteration, then MultiStepLR stepped once per epoch.
    Returns the lr every iteration trains with."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    multistep = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=gamma)
    iters = warmup_epochs * steps_per_epoch
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: i / iters)
    lrs = []
    for _ in range(warmup_epochs):
        for _ in range(steps_per_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            warmup.step()
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
        multistep.step()
    return lrs


class _OptimizerRecorder(_LRRecorder):
    def on_train_start(self, trainer, pl_module):
        self.optimizer = trainer.optimizers[0]


def test_multistep_schedule_and_sgd_equal_the_authors_sgd_recipe(tmp_path):
    """kind="multistep": 1 warm-up epoch from 0 per iteration, then MultiStepLR([2, 4], 0.2) per
    epoch over 5 epochs of 4 steps (the authors' 1 + 200 with [60, 120, 160], scaled down); plain SGD."""
    module = classifier(
        optimizer=OptimizerOptions(name="sgd", lr=0.1, weight_decay=5e-4),
        schedule=LRSchedule(kind="multistep", warmup_epochs=1, milestones=(2, 4), gamma=0.2),
        targets=TargetOptions(label_smoothing=0, mixup_alpha=0, cutmix_alpha=0),
    )
    rec = _OptimizerRecorder()
    dm = SyntheticDataModule(num_train=64, num_val=16, batch_size=16, auto_augment=None)
    trainer = pl.Trainer(
        max_epochs=6,
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
    expected = authors_sgd_loop_lrs(0.1, 1, 5, 4, milestones=[2, 4], gamma=0.2)
    assert len(expected) == 24 and expected[0] == 0.0 and expected[4] == pytest.approx(0.1)
    assert expected[12] == pytest.approx(0.02) and expected[20] == pytest.approx(0.004)  # epochs 2 and 4
    assert rec.lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert isinstance(rec.optimizer, torch.optim.SGD)
    group = rec.optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, False, 5e-4)
    assert len(rec.optimizer.param_groups) == 1  # every parameter decays, as SGD(model.parameters())
    # the closed form at the authors' length (1 + 200 epochs of 391 steps): epoch 60 after the warm-up
    # trains at 0.2, epoch 159 at 0.04, epoch 160 at 0.008
    for epoch, want in ((0, 1.0), (59, 1.0), (60, 0.2), (159, 0.04), (160, 0.008), (199, 0.008)):
        step = 391 + epoch * 391
        assert official_warmup_multistep(step, 391, 391, (60, 120, 160), 0.2) == pytest.approx(want)
    with pytest.raises(ValueError, match=r"LRSchedule: milestones=\[120, 60\]"):
        LRSchedule(milestones=(120, 60))


class _Logits(nn.Module):
    """A 'model' whose input is its logits: lets the metrics see a hand-built batch."""

    def forward(self, x):
        return x


def test_nll_and_ece_equal_hand_computation():
    module = classifier(num_classes=3, targets=NO_MIXING, metrics=MetricOptions(ece_bins=15))
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


def test_official_metrics_ten_bins_and_mean_of_batch_means():
    """ops/tests.py: ECE over 10 equal bins; NLL the mean of per-batch mean NLLs (uneven batches differ)."""
    probs = torch.tensor([[0.92, 0.04, 0.04], [0.95, 0.03, 0.02], [0.45, 0.35, 0.2], [0.55, 0.25, 0.2]])
    labels = torch.tensor([0, 1, 0, 2])
    nll = -(probs[torch.arange(4), labels].log())
    official = classifier(num_classes=3, targets=NO_MIXING)
    official.model = _Logits()
    per_sample = classifier(num_classes=3, targets=NO_MIXING, metrics=MetricOptions(nll_average="per_sample"))
    per_sample.model = _Logits()
    for module in (official, per_sample):
        module.validation_step((probs[:1].log(), labels[:1]), 0)  # a batch of 1, then one of 3
        module.validation_step((probs[1:].log(), labels[1:]), 1)
    assert official.val_loss.compute() == pytest.approx(float((nll[0] + nll[1:].mean()) / 2), rel=1e-6)
    assert per_sample.val_loss.compute() == pytest.approx(float(nll.mean()), rel=1e-6)
    # 10 bins: [.9, 1] holds .92 (right) and .95 (wrong); [.5, .6) .55 (wrong); [.4, .5) .45 (right)
    ece10 = (2 * abs(0.5 - 0.935) + abs(0 - 0.55) + abs(1 - 0.45)) / 4
    # 15 bins split .92 and .95 apart: [.8667, .9333) and [.9333, 1]
    ece15 = (abs(1 - 0.92) + abs(0 - 0.95) + abs(0 - 0.55) + abs(1 - 0.45)) / 4
    assert official.val_ece.compute() == pytest.approx(ece10, rel=1e-5)
    fifteen = classifier(num_classes=3, targets=NO_MIXING, metrics=MetricOptions(ece_bins=15))
    fifteen.model = _Logits()
    fifteen.validation_step((probs.log(), labels), 0)
    assert fifteen.val_ece.compute() == pytest.approx(ece15, rel=1e-5)


def test_val_metrics_and_corruption_analysis_share_one_ece_and_nll_with_ten_bins_by_default():
    """`val/ece` / `val/nll` and `evaluate_subsets` (corruptions) give the same numbers, equal to a 10-bin
    ECE worked out by hand; the corruption analysis defaults to 10 bins (15 would give another value)."""
    from alternet_pl.analysis.robustness import classification_counts, evaluate_subsets, metrics_from_counts

    probs = torch.tensor(
        [
            [0.92, 0.04, 0.04],
            [0.95, 0.03, 0.02],
            [0.45, 0.35, 0.2],
            [0.55, 0.25, 0.2],
            [0.35, 0.33, 0.32],
            [1.0, 0.0, 0.0],
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 1, 0, 2, 0, 0])
    batches = [(probs[:2].log(), labels[:2]), (probs[2:].log(), labels[2:])]
    # bins (k/10, (k+1)/10]: (.9, 1] holds .92 right, .95 wrong, 1.0 right -> |2 - 2.87|; .55 wrong,
    # .45 right, .35 right alone in theirs
    ece = (abs(2 - 2.87) + abs(0 - 0.55) + abs(1 - 0.45) + abs(1 - 0.35)) / 6
    assert ece == pytest.approx(0.436667, abs=1e-6)
    nll = -probs[torch.arange(6), labels].log()
    per_batch, per_sample = float((nll[:2].mean() + nll[2:].mean()) / 2), float(nll.mean())
    module = classifier(num_classes=3, targets=NO_MIXING)
    module.model = _Logits()
    for i, batch in enumerate(batches):
        module.validation_step(batch, i)
    assert float(module.val_ece.compute()) == pytest.approx(ece, rel=1e-9)
    assert float(module.val_loss.compute()) == pytest.approx(per_batch, rel=1e-9)
    analysis = evaluate_subsets(_Logits(), {"slice": batches})["slice"]
    assert analysis["ece"] == pytest.approx(ece, rel=1e-9)
    assert analysis["nll"] == pytest.approx(per_sample, rel=1e-9) and analysis["acc"] == pytest.approx(4 / 6)
    counts = classification_counts(_Logits(), batches)
    assert metrics_from_counts(counts, nll_average="per_batch")["nll"] == pytest.approx(per_batch, rel=1e-9)
    fifteen = evaluate_subsets(_Logits(), {"slice": batches}, n_bins=15)["slice"]["ece"]
    assert abs(fifteen - ece) > 0.01  # .92 leaves the top bin with 15 bins: the default matters


def test_weight_decay_on_every_parameter_by_default_exemption_is_an_option():
    def exempt(module):
        return {n: p.numel() for n, p in module.model.named_parameters() if module.decay_exempt(n, p)}

    with torch.device("meta"):
        matrices = OptimizerOptions(weight_decay_on="matrices")
        alternet = classifier("alternet_cifar_50", num_classes=100)
        alternet_matrices = classifier("alternet_cifar_50", num_classes=100, optimizer=matrices)
        vit_matrices = classifier("vit_cifar_ti", num_classes=100, optimizer=matrices)
    assert exempt(alternet) == {}  # the authors: AdamW(model.parameters()) decays everything
    assert sum(exempt(alternet_matrices).values()) == 55_524  # BN affines and biases
    skipped = exempt(vit_matrices)
    assert sum(skipped.values()) == 80_164 - 12 * 576  # the count, less the qkv biases now gone
    assert {"pos_embed", "cls_token", "blocks.0.norm1.weight", "head.bias"} <= skipped.keys()
    assert "blocks.0.attn.qkv.weight" not in skipped
    with pytest.raises(ValueError, match=r"weight_decay_on='some'.*'all', 'matrices'"):
        OptimizerOptions(weight_decay_on="some")
    with pytest.raises(ValueError, match=r"kind='cosine'.*'official', 'per_step'"):
        LRSchedule(kind="cosine")


def test_fit_start_prints_one_line_with_global_batch_lr_and_schedule(tmp_path, caplog):
    """The module prints nothing itself; `ScaleReport` (every `fit` adds it) prints the one start-up line,
    with the lr scaled from its reference batch: 1.25e-4 x 24/96."""
    optimizer, schedule = OptimizerOptions(lr=1.25e-4, lr_reference_batch=96), LRSchedule(warmup_epochs=1)
    module = classifier(optimizer=optimizer, schedule=schedule, targets=NO_MIXING)
    with caplog.at_level("INFO"):
        _fit_recording_lrs(
            module, tmp_path, max_epochs=2, num_train=48, batch_size=24, callbacks=[ScaleReport()]
        )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alternet-pl:")]
    assert lines == [
        "alternet-pl: 1 device(s) x 24 per device = global batch 24, peak lr 3.125e-05 (= 0.000125 x "
        "24/96), precision 32-true, schedule official, 1 warm-up epoch(s) of 2; the experiment's recipe as "
        "its authors ran it (scaling faithful)"
    ]


def test_mixup_targets_sum_to_one():
    module = classifier(targets=TargetOptions(label_smoothing=0.1, mixup_alpha=1.0, cutmix_alpha=0.8))
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    mixed_x, targets = module.mixup_fn(x, y)
    assert targets.shape == (8, 10)
    assert torch.allclose(targets.sum(1), torch.ones(8))
    assert mixed_x.shape == x.shape


def configured(module: ImageClassifier, steps: int = 10, epochs: int = 2) -> dict:
    """`module.configure_optimizers()` under a stand-in trainer of `steps` optimizer steps over `epochs`."""
    module.trainer = SimpleNamespace(
        estimated_stepping_batches=steps, max_epochs=epochs, world_size=1, accumulate_grad_batches=1
    )
    return module.configure_optimizers()


def test_one_optimizer_step_lowers_the_loss():
    """One step of the optimizer `configure_optimizers` returns, at the schedule's first lr (no warm-up)."""
    torch.manual_seed(0)
    module = classifier(
        "alternet_cifar_micro",
        optimizer=OptimizerOptions(lr=1e-3),
        schedule=LRSchedule(warmup_epochs=0),
        targets=NO_MIXING,
    )
    optimizer = configured(module)["optimizer"]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    module.model.eval()  # fixed BN statistics so the two losses are comparable
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    before = module.eval_loss((x, y))
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = module.eval_loss((x, y))
    assert after < before


@pytest.mark.parametrize("name", ["adamw", "sgd"])
@pytest.mark.parametrize("decay_on", ["all", "matrices"])
def test_configured_optimizer_decays_each_weight_by_one_minus_lr_times_weight_decay(name, decay_on):
    """With zero gradients one step is the decay alone: AdamW's decoupled decay and SGD's L2 term (first
    momentum buffer = the gradient) both multiply a decayed weight by exactly 1 - lr * weight_decay and leave
    an exempt one as it was. Every parameter decays with "all" (the authors); "matrices" spares 1-D ones."""
    lr, weight_decay = 0.1, 0.05
    module = classifier(
        optimizer=OptimizerOptions(name=name, lr=lr, weight_decay=weight_decay, weight_decay_on=decay_on),
        schedule=LRSchedule(warmup_epochs=0),
        targets=NO_MIXING,
    )
    optimizer = configured(module)["optimizer"]
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    for p in module.model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    exempt = 0
    for n, p in module.model.named_parameters():
        spared = decay_on == "matrices" and p.ndim <= 1
        exempt += spared
        want = before[n] if spared else before[n] * (1 - lr * weight_decay)
        torch.testing.assert_close(p.detach(), want, rtol=1e-6, atol=0, msg=n)
    assert (exempt > 0) is (decay_on == "matrices")


def test_unknown_model_lists_close_names():
    with pytest.raises(ValueError, match=r"unknown model 'alternet_cifar_5'.*alternet_cifar_50"):
        create_model("alternet_cifar_5", num_classes=10)


def test_num_classes_mismatch_is_an_error(tmp_path):
    dm = SyntheticDataModule(num_train=32, num_val=16, batch_size=16, num_classes=10)
    module = classifier(num_classes=7)
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


def test_from_config_reads_its_own_hparams_and_the_flat_configs_of_older_runs():
    """A module rebuilt from its hyperparameters has the same recipe; a run config written before the recipe
    groups (the 22 flat arguments, as `fit` dumped them) gives the recipe written here by hand."""
    sgd = Recipe(
        optimizer=OptimizerOptions(name="sgd", lr=0.1, lr_reference_batch=128, weight_decay=5e-4),
        schedule=LRSchedule(kind="multistep", warmup_epochs=1, milestones=(60, 120, 160), gamma=0.2),
        targets=TargetOptions(label_smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0),
        metrics=MetricOptions(ece_bins=15, nll_average="per_sample"),
    )
    module = ImageClassifier(Network("resnet_cifar_micro", {"block_style": "postact"}), 100, sgd)
    again = ImageClassifier.from_config(dict(module.hparams))
    assert again.recipe == sgd and again.hparams == module.hparams and again.num_classes == 100
    assert ImageClassifier(**module.hparams).recipe == sgd  # what Lightning's load_from_checkpoint calls
    flat = {
        "model": "resnet_cifar_micro",
        "model_kwargs": {"block_style": "postact"},
        "num_classes": 100,
        "optimizer": "sgd",
        "lr": 0.1,
        "lr_reference_batch": 128,
        "weight_decay": 5e-4,
        "weight_decay_on": "all",
        "momentum": 0.9,
        "nesterov": False,
        "warmup_epochs": 1,
        "lr_schedule": "multistep",
        "lr_milestones": [60, 120, 160],
        "lr_gamma": 0.2,
        "min_lr_ratio": 0.0,
        "label_smoothing": 0.0,
        "mixup_alpha": 0.0,
        "cutmix_alpha": 0.0,
        "mixup_prob": 1.0,
        "mixup_switch_prob": 0.5,
        "ece_bins": 15,
        "nll_average": "per_sample",
    }
    old = ImageClassifier.from_config(flat)
    assert old.recipe == sgd and old.hparams == module.hparams
    with pytest.raises(ValueError, match=r"unknown: \['lrr'\]"):
        ImageClassifier.from_config({"network": {"name": "resnet_cifar_micro"}, "lrr": 1})
    with pytest.raises(ValueError, match="recipe.optimizer: .*'lrr'"):
        ImageClassifier.from_config(
            {"network": {"name": "resnet_cifar_micro"}, "recipe": {"optimizer": {"lrr": 1}}}
        )


def test_channels_last_network_is_the_same_function_stored_channels_last():
    """`Network(memory_format="channels_last")`: the same weights, outputs and gradients as the contiguous
    build (to float rounding), its conv weights really channels last, kept through the hyperparameters;
    an unknown format is one `InputError`."""
    kwargs = {"depths": [1, 1], "widths": [8, 16], "stem_width": 16, "num_heads": [1, 1]}
    kwargs["layout"] = ["C", "C"]
    torch.manual_seed(0)
    plain = ImageClassifier(Network("resnet_cifar_micro", kwargs), 10)
    torch.manual_seed(0)
    fast = ImageClassifier(Network("resnet_cifar_micro", kwargs, "channels_last"), 10)
    convs = [m.weight for m in fast.model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)
    for (name, a), b in zip(plain.model.state_dict().items(), fast.model.state_dict().values()):
        assert torch.equal(a, b), name
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    plain.eval()
    fast.eval()
    out_plain, out_fast = plain.model(x), fast.model(x)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-4, atol=1e-5)
    torch.nn.functional.cross_entropy(out_plain, y).backward()
    torch.nn.functional.cross_entropy(out_fast, y).backward()
    for (name, a), b in zip(plain.model.named_parameters(), fast.model.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)
    again = ImageClassifier.from_config(dict(fast.hparams))
    assert again.hparams["network"]["memory_format"] == "channels_last"
    assert next(m for m in again.model.modules() if isinstance(m, nn.Conv2d)).weight.is_contiguous(
        memory_format=torch.channels_last
    )
    with pytest.raises(ValueError, match=r"memory_format='nhwc' not understood.*channels_last"):
        Network("resnet_cifar_micro", {}, "nhwc")
