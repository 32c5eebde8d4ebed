"""Each analysis is `run(model, loss_fn, batches, options) -> Record`; its callback only declares.

* the callback writes exactly what `run` returns (same arrays, same numbers);
* `settings()` (what `state_key` sees) holds every options field, counted leaf by leaf, and every
  constructor argument besides the shared ones;
* `coefficient: train` follows the training run's weight decay (`recipe_info`), also for the paper's
  ResNet SGD recipe (5e-4) through `fit`'s own config parsing.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from alternet_pl.analysis.loss import cross_entropy_loss
from alternet_pl.analysis.options import WeightDecayTerm
from alternet_pl.analysis.trajectory import flatten_trainable
from alternet_pl.callbacks.options import (
    AnalysisData,
    DensityOptions,
    EigenOptions,
    SpectrumOptions,
    TraceOptions,
)
from tests.conftest import make_batches
from tests.test_hessian_callback import TinyNet

ROOT = Path(__file__).resolve().parents[1]
SHARED = {"self", "kwargs", "data", "schedule", "log_images", "strict"}


class RecipeModule(nn.Module):
    """A stand-in LightningModule that follows `RecipeInfo` (warm-up, mixup, training weight decay)."""

    def __init__(self, weight_decay: float = 5e-4) -> None:
        super().__init__()
        self.model = TinyNet()
        self.weight_decay, self.warmup_epochs, self.mixup_fn = weight_decay, 0, None


class Data:
    def analysis_batches(self, split, num_batches, batch_size, augment, seed, mixup_fn):
        return make_batches((2, 5, 5), sizes=(5, 3, 7)[:num_batches], seed=seed + 5)


def _hessian():
    from alternet_pl.callbacks.hessian import HessianCallback

    return HessianCallback(
        data=AnalysisData(num_batches=3),
        dtype="float64",
        eigen=EigenOptions(k=2, tol=1e-8, max_iter=40),
        trace=TraceOptions(samples=12),
        density=DensityOptions(steps=5),
        spectrum=SpectrumOptions(enabled=True, tol=1e-6, max_iter=30),
        blockwise=True,
        weight_decay=WeightDecayTerm(0.05),
    )


def _landscape():
    from alternet_pl.callbacks.landscape import LandscapeCallback

    return LandscapeCallback(
        steps=4, span=0.5, weight_decay=WeightDecayTerm(0.05), data=AnalysisData(num_batches=2)
    )


def _freq_noise():
    from alternet_pl.callbacks.robustness import FreqNoiseCallback

    return FreqNoiseCallback(freqs=[0.3, 0.9], eps=0.5, data=AnalysisData(num_batches=2, seed=3))


def _trajectory():
    from alternet_pl.callbacks.landscape import TrajectoryCallback

    return TrajectoryCallback(steps=5, data=AnalysisData(num_batches=2))


def _snapshots(model: nn.Module) -> dict[int, np.ndarray]:
    final = flatten_trainable(model)
    rng = np.random.default_rng(0)
    return {e: final + rng.normal(scale=0.1 * (3 - e), size=final.shape).astype(np.float32) for e in range(3)}


def _assert_same_record(a, b) -> None:
    assert type(a) is type(b)
    for f in fields(a):
        if f.name in ("epoch", "seconds", "world_size", "settings"):
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f.name)
        elif isinstance(x, float) and math.isnan(x):
            assert math.isnan(y), f.name
        else:
            assert x == y, f.name


@pytest.mark.parametrize(
    "make", [_hessian, _landscape, _freq_noise, _trajectory], ids=lambda m: m.__name__[1:]
)
def test_the_callback_writes_what_run_returns(make, tmp_path):
    import importlib

    from alternet_pl.analysis.records import load_record
    from alternet_pl.registry import ANALYSES

    torch.manual_seed(0)
    module, data, cb = RecipeModule(), Data(), make()
    module.model.double()
    if cb.name == "trajectory":
        cb.snapshots = _snapshots(module.model)
    written = cb.run(module, data, tmp_path, epoch=1)
    options_path = ANALYSES[cb.name].options
    run = importlib.import_module(options_path.rpartition(".")[0]).run
    batches = data.analysis_batches("val", cb.data.num_batches, None, False, cb.data.seed, None)
    extra = {}
    if cb.name == "trajectory":
        extra = {"snapshots": [cb.snapshots[e] for e in sorted(cb.snapshots)], "epochs": sorted(cb.snapshots)}
    direct = run(module.model, cross_entropy_loss, batches, cb.options, **extra)
    _assert_same_record(written, direct)
    _assert_same_record(load_record(tmp_path / "analysis" / cb.name / "epoch=001.json"), direct)


def _leaves(value) -> int:
    """How many plain values a (nested) dataclass or dict holds."""
    if is_dataclass(value):
        return sum(_leaves(getattr(value, f.name)) for f in fields(value))
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values())
    return 1


@pytest.mark.parametrize(
    "make", [_hessian, _landscape, _freq_noise, _trajectory], ids=lambda m: m.__name__[1:]
)
def test_settings_hold_every_option(make):
    cb = make()
    settings = cb.settings()
    extras = {"snapshot_every_n_epochs", "store", "checkpoints"} if cb.name == "trajectory" else set()
    assert _leaves(cb.options) + _leaves(cb.data) + len(extras) == _leaves(settings)
    for f in fields(cb.options):
        value = getattr(cb.options, f.name)
        expected = {g.name: getattr(value, g.name) for g in fields(value)} if is_dataclass(value) else value
        assert settings[f.name] == expected, f.name
    arguments = set(inspect.signature(type(cb).__init__).parameters) - SHARED
    assert arguments <= set(settings), arguments - set(settings)  # every constructor argument counts
    assert cb.state_key != type(cb)(**{"data": AnalysisData(seed=99)}).state_key


def test_train_coefficient_follows_the_recipe(tmp_path):
    from alternet_pl.callbacks.hessian import HessianCallback

    module, data = RecipeModule(weight_decay=5e-4), Data()
    module.model.double()
    options = dict(dtype="float64", eigen=EigenOptions(tol=1e-9), trace=TraceOptions(samples=0))
    options["density"] = DensityOptions(enabled=False)
    follows = HessianCallback(weight_decay=WeightDecayTerm("train"), **options).run(module, data, tmp_path, 0)
    fixed = HessianCallback(weight_decay=WeightDecayTerm(5e-4), **options).run(module, data, tmp_path, 0)
    clean = HessianCallback(**options).run(module, data, tmp_path, 0)
    assert follows.settings["weight_decay"] == {"coefficient": 5e-4, "form": "norm"}  # what ran
    assert follows.top_eig == fixed.top_eig != clean.top_eig
    with pytest.raises(ValueError, match="coefficient='train' has no value"):
        WeightDecayTerm("train").value()
    with pytest.raises(ValueError, match="use a number >= 0 or 'train'"):
        WeightDecayTerm("trian")


def test_paper_analyses_of_the_resnet_sgd_recipe_use_its_weight_decay(tmp_path, capsys):
    """`resnet50_cifar100_sgd` + `paper.yaml` with `coefficient: train`: the analyses' term is the
    recipe's 5e-4 (not the AdamW 0.05), read as `analyze` reads it: from the run config's model section."""
    import yaml

    from alternet_pl import analyze, fit
    from alternet_pl.training.module import ImageClassifier

    paper = tmp_path / "paper.yaml"
    paper.write_text(
        (ROOT / "configs/analysis/paper.yaml").read_text().replace("coefficient: 0.05", "coefficient: train")
    )
    with pytest.raises(SystemExit):
        fit.main(
            [
                "--config",
                str(ROOT / "experiments/resnet50_cifar100_sgd.yaml"),
                "--config",
                str(paper),
                "--print_config",
            ]
        )
    run_config = yaml.safe_load(capsys.readouterr().out)
    module = ImageClassifier.from_config(run_config["model"])
    callbacks = analyze.instantiate_analyses(run_config["analyses"])
    decayed = [cb for cb in callbacks if getattr(cb.options, "weight_decay", None) is not None]
    assert {cb.name for cb in decayed} >= {"hessian", "landscape"}
    for cb in decayed:
        assert cb.options.weight_decay.coefficient == "train"
        assert cb.run_options(module).weight_decay.coefficient == pytest.approx(5e-4)
