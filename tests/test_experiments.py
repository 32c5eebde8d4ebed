"""Every paper experiment matches the authors' recipe value by value, and trains a step end to end
(full-size model, its recipe, on a few synthetic images, since no data set can be downloaded)."""

import contextlib
import glob
import io
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

from alternet_pl import fit
from tests.conftest import launcher_free_env

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(
    p for p in glob.glob(str(ROOT / "experiments" / "*.yaml")) if not p.endswith("quickstart.yaml")
)


@pytest.mark.slow
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: Path(p).stem)
def test_paper_experiment_trains_a_step(path, tmp_path):
    imagenet = "imagenet" in Path(path).stem
    cmd = [
        sys.executable,
        "-m",
        "alternet_pl.fit",
        "--config",
        path,
        "--data",
        "alternet_pl.data.SyntheticDataModule",
        "--data.num_train=4",
        "--data.num_val=2",
        "--data.batch_size=2",
        f"--data.num_classes={1000 if imagenet else 100}",
        f"--data.image_size={224 if imagenet else 32}",
        "--data.auto_augment=rand-m9-n2-mstd1.0",
        "--trainer.max_epochs=1",
        "--trainer.limit_val_batches=1",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.enable_model_summary=false",
        f"--runs_dir={tmp_path}",
    ]
    env = launcher_free_env()
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list(tmp_path.glob("*/version_0"))
    assert len(runs) == 1 and (runs[0] / "checkpoints" / "last.ckpt").is_file()
    assert "val/acc1" in (runs[0] / "metrics.csv").read_text()


# ----------------------------------------------------------------------------- recipe values

# The authors' recipe, value by value (their configs/cifar100_vit.yaml and imagenet_vit.yaml, ops/trains.py,
# ops/schedulers.py, ops/tests.py, models/*.py and the README's timm calls). Written here, independently of
# the experiment files, so that a changed value in an experiment fails this test.
AUTHORS_CIFAR = {
    "optimizer.name": "adamw",
    "optimizer.lr": 1.25e-4,
    "optimizer.lr_reference_batch": 96,  # the lr is per 96 images of global batch
    "global_batch": 96,
    "optimizer.weight_decay": 0.05,
    "optimizer.weight_decay_on": "all",  # optim.AdamW(model.parameters(), ...): no exemption
    "schedule.warmup_epochs": 5,  # linear from 0, per iteration
    "max_epochs": 305,  # 5 warm-up + 300 cosine epochs
    "schedule.kind": "official",  # CosineAnnealingLR(T_max=300, eta_min=0), stepped once per epoch
    "schedule.min_lr_ratio": 0.0,
    "targets.mixup_alpha": 1.0,
    "targets.cutmix_alpha": 0.8,
    "targets.mixup_prob": 1.0,
    "targets.mixup_switch_prob": 0.5,
    "targets.label_smoothing": 0.1,
    "gradient_clip_val": 5.0,
    "auto_augment": "rand-m9-n2-mstd1.0",
    "re_prob": 0.0,
    "hflip": 0.5,
    "drop_last": False,
    "drop_path_rate": 0.1,
    "metrics.ece_bins": 10,
    "metrics.nll_average": "per_batch",
}
AUTHORS_IMAGENET = {
    **AUTHORS_CIFAR,
    "optimizer.lr_reference_batch": 128,  # 1.25e-4 at the global batch of 128 (not rescaled from 96)
    "global_batch": 128,
    "gradient_clip_val": None,
    "auto_augment": "rand-m9-n2-mstd0.5",
    "re_prob": 0.25,
    "drop_last": True,
}
# The authors' SGD recipe for ResNets (configs/cifar100_general.yaml and .json, all versions alike;
# ops/trains.py get_optimizer: SGD(model.parameters(), **optim) and MultiStepLR stepped once per epoch after
# the warm-up; ops/schedulers.py WarmupScheduler over len(loader) * warmup_epochs iterations; models/resnet.py
# sd=0.0).
AUTHORS_CIFAR_SGD = {
    **AUTHORS_CIFAR,
    "optimizer.name": "sgd",
    "optimizer.lr": 0.1,
    "optimizer.lr_reference_batch": 128,
    "global_batch": 128,
    "optimizer.momentum": 0.9,
    "optimizer.nesterov": False,
    "optimizer.weight_decay": 5e-4,
    "optimizer.weight_decay_on": "all",  # optim.SGD(model.parameters(), ...)
    "schedule.warmup_epochs": 1,
    "max_epochs": 201,  # 1 warm-up + 200 epochs
    "schedule.kind": "multistep",  # MultiStepLR(milestones=[60, 120, 160], gamma=0.2), per epoch
    "schedule.milestones": [60, 120, 160],
    "schedule.gamma": 0.2,
    "targets.mixup_alpha": 0.0,  # no `mixup` in train args: no Mixup/CutMix
    "targets.cutmix_alpha": 0.0,
    "targets.label_smoothing": 0.0,  # no `smoothing`: nn.CrossEntropyLoss()
    "gradient_clip_val": None,  # no `max_norm`
    "auto_augment": None,  # padding 4: RandomCrop(32, 4) + flip, no RandAugment
    "drop_path_rate": 0.0,
}
AUTHORS_RECIPES = {"resnet50_cifar100_sgd": AUTHORS_CIFAR_SGD}
RECIPE_KEYS = {k for table in (AUTHORS_CIFAR, AUTHORS_IMAGENET, AUTHORS_CIFAR_SGD) for k in table}


def authors_recipe(name: str) -> dict:
    return AUTHORS_RECIPES.get(name, AUTHORS_IMAGENET if "imagenet" in name else AUTHORS_CIFAR)


# per model: (registered name, MSA layout or None, attention window or None, qkv bias or None, extra kwargs)
AUTHORS_MODELS = {
    "alter_r50": ("alternet_cifar_50", ("CCC", "CCCM", "CMCMCM", "CMCM"), 4, None, {}),
    "alter_r50_fig": ("alternet_cifar_50", ("CCC", "CCCM", "CCCCCM", "CMCM"), 4, None, {}),
    "alter_r50_imagenet": ("alternet_50", ("CCC", "CCCM", "CMCMCM", "CMCM"), 7, None, {}),
    "resnet50_cifar100": (
        "resnet_cifar_50",
        ("CCC", "CCCC", "CCCCCC", "CCC"),
        None,
        None,
        {"block_style": "postact"},
    ),
    "resnet50_cifar100_sgd": (
        "resnet_cifar_50",
        ("CCC", "CCCC", "CCCCCC", "CCC"),
        None,
        None,
        {"block_style": "postact"},
    ),
    "vit_ti_cifar100": ("vit_cifar_ti", None, None, False, {"global_pool": "token"}),
    "vit_ti_gap_cifar100": ("vit_cifar_ti", None, None, False, {"global_pool": "avg"}),
    "pit_ti_cifar100": ("pit_cifar_ti", None, None, True, {}),
    "swin_ti_cifar100": ("swin_cifar_ti", None, 4, False, {}),
}


def printed_config(*paths: str) -> dict:
    """`fit --config ... --print_config` parsed: every value training would see (files composed, recipe
    files read, defaults filled in)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        fit.main([arg for path in paths for arg in ("--config", path)] + ["--print_config"])
    assert done.value.code in (0, None), out.getvalue()[-2000:]
    return yaml.safe_load(out.getvalue())


def effective_recipe(path: str) -> tuple[dict, dict]:
    """(recipe values, model kwargs) as training would see them, read from `--print_config`."""
    cfg = printed_config(path)
    model, data, trainer = cfg["model"], cfg["data"]["init_args"], cfg["trainer"]
    recipe = {f"{group}.{k}": v for group, values in model["recipe"].items() for k, v in values.items()}
    recipe = {k: v for k, v in recipe.items() if k in RECIPE_KEYS}
    recipe |= {k: data[k] for k in ("auto_augment", "re_prob", "hflip", "drop_last")}
    recipe |= {k: trainer.get(k) for k in ("max_epochs", "gradient_clip_val")}
    devices = trainer.get("devices", 1)
    assert isinstance(devices, int), f"{path}: devices={devices!r}; pin it so the global batch is known"
    recipe["global_batch"] = data["batch_size"] * devices * (trainer.get("accumulate_grad_batches") or 1)
    kwargs = dict(model["network"].get("kwargs") or {})
    recipe["drop_path_rate"] = kwargs.get("drop_path_rate", 0.0)
    return recipe, {"model": model["network"]["name"], **kwargs}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: Path(p).stem)
def test_experiment_recipe_matches_the_authors_value_by_value(path):
    name = Path(path).stem
    recipe, kwargs = effective_recipe(path)
    authors = authors_recipe(name)
    wrong = {k: (recipe.get(k), v) for k, v in authors.items() if recipe.get(k) != v}
    assert not wrong, f"{name}: (ours, authors') differ: {wrong}"
    registered, layout, window, qkv_bias, extra = AUTHORS_MODELS[name]
    assert kwargs.pop("model") == registered
    for key, value in extra.items():
        assert kwargs.get(key) == value, (name, key)
    with torch.device("meta"):
        model = timm.create_model(registered, num_classes=1000 if "imagenet" in name else 100, **kwargs)
    if layout is not None:
        assert model.layout == layout
    if window is not None:
        windows = {
            getattr(m, "window_size", None) for m in model.modules() if "WindowAttention" in type(m).__name__
        }
        assert windows in ({window}, {(window, window)}), (name, windows)
    if qkv_bias is not None:
        assert any(k.endswith("qkv.bias") for k in model.state_dict()) is qkv_bias
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    # stochastic depth reaches the recipe's rate (0.1; 0 for SGD) at the last block
    assert max(rates, default=0.0) == pytest.approx(authors["drop_path_rate"])
    assert rates or authors["drop_path_rate"] == 0


def test_buildup_steps_keep_the_recipe_and_place_msas_from_the_stage_ends():
    steps = sorted((ROOT / "experiments" / "buildup").glob("step_*.yaml"))
    layouts = []
    for step in steps:
        network = printed_config(str(ROOT / "experiments" / "alter_r50.yaml"), str(step))["model"]["network"]
        assert network["name"] == "alternet_cifar_50" and network["kwargs"]["drop_path_rate"] == 0.1
        layouts.append(tuple(network["kwargs"]["msa_per_stage"]))
    assert layouts[0] == (0, 0, 0, 0) and layouts[-1] == (0, 1, 3, 2)
