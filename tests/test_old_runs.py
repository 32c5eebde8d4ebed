"""Runs written before the recipe groups (alternet-pl up to commit 3354235) resume and read in today's layout.

The old layout is written out by hand here, key by key as that commit's `fit` wrote it (config.yaml's flat
`model:` section, the checkpoint's flat hyperparameters with Lightning's `_instantiator`, no LoaderPosition
or MetricStates state), not derived from `alternet_pl.old_runs.FLAT_KEYS`."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from alternet_pl import fit
from alternet_pl.old_runs import upgrade_run_config, upgraded_config_args, upgraded_config_text
from alternet_pl.training.checkpoints import load_checkpoint
from alternet_pl.training.module import ImageClassifier
from tests.conftest import launcher_free_env

ROOT = Path(__file__).resolve().parents[1]

#: the `model:` section 3354235's fit wrote for experiments/quickstart.yaml with --model.mixup_alpha=0.8
OLD_MODEL = {
    "model": "alternet_cifar_micro",
    "model_kwargs": None,
    "num_classes": 10,
    "optimizer": "adamw",
    "lr": 0.002,
    "lr_reference_batch": None,
    "weight_decay": 0.05,
    "weight_decay_on": "all",
    "momentum": 0.9,
    "nesterov": False,
    "warmup_epochs": 1.0,
    "lr_schedule": "official",
    "lr_milestones": [60, 120, 160],
    "lr_gamma": 0.2,
    "min_lr_ratio": 0.0,
    "label_smoothing": 0.0,
    "mixup_alpha": 0.8,
    "cutmix_alpha": 0.0,
    "mixup_prob": 1.0,
    "mixup_switch_prob": 0.5,
    "ece_bins": 10,
    "nll_average": "per_batch",
}
#: the state key of the callback that wrote 3354235's last.ckpt
OLD_LAST_CHECKPOINT = (
    "ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
    "'train_time_interval': None}"
)
#: the same, in today's layout, written out by hand
GROUPED_MODEL = {
    "network": {"name": "alternet_cifar_micro", "kwargs": {}},
    "num_classes": 10,
    "recipe": {
        "optimizer": {
            "name": "adamw", "lr": 0.002, "lr_reference_batch": None, "weight_decay": 0.05,
            "weight_decay_on": "all", "momentum": 0.9, "nesterov": False,
        },
        "schedule": {
            "kind": "official", "warmup_epochs": 1.0, "milestones": [60, 120, 160], "gamma": 0.2,
            "min_lr_ratio": 0.0,
        },
        "targets": {
            "label_smoothing": 0.0, "mixup_alpha": 0.8, "cutmix_alpha": 0.0, "mixup_prob": 1.0,
            "mixup_switch_prob": 0.5,
        },
        "metrics": {"ece_bins": 10, "nll_average": "per_batch"},
    },
}  # fmt: skip


def test_an_old_run_config_reads_grouped_with_its_per_device_batch():
    old = {"experiment": "quickstart", "model": OLD_MODEL, "data": {"init_args": {"batch_size": 64}}}
    new = upgrade_run_config(old)
    assert new == {**old, "model": GROUPED_MODEL, "scaling": "fast"}  # batch_size was per device
    assert upgrade_run_config(new) == new  # today's layout comes back as it was
    assert upgrade_run_config({"scaling": "faithful", "model": GROUPED_MODEL})["scaling"] == "faithful"
    module = ImageClassifier.from_config(dict(OLD_MODEL))
    assert dict(module.hparams) == ImageClassifier.from_config(GROUPED_MODEL).hparams


def test_config_arguments_of_an_old_run_become_its_text_in_todays_layout(tmp_path, capsys):
    run = tmp_path / "quickstart" / "version_0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"experiment": None, "model": OLD_MODEL}))
    today = tmp_path / "today.yaml"
    today.write_text(yaml.safe_dump({"model": GROUPED_MODEL}))
    args = [
        "--config",
        str(run / "config.yaml"),
        "-c",
        str(today),
        f"--config={run / 'config.yaml'}",
        "--x=1",
    ]
    upgraded = upgraded_config_args(args)
    assert upgraded[2:4] == args[2:4] and upgraded[5] == args[5]  # today's layout and other flags untouched
    text = upgraded[1]
    assert upgraded[4] == "--config=" + text
    assert yaml.safe_load(text) == {"experiment": "quickstart", "model": GROUPED_MODEL, "scaling": "fast"}
    assert "written before the recipe groups" in capsys.readouterr().err
    assert upgraded_config_text(today) is None and upgraded_config_text(tmp_path / "missing.yaml") is None


def test_fit_parses_an_old_run_config_in_todays_layout(tmp_path, capsys):
    """`fit --config <old run>/config.yaml`: the merged config jsonargparse prints is today's."""
    run = tmp_path / "quickstart" / "version_0"
    run.mkdir(parents=True)
    old = {
        "experiment": "quickstart",
        "model": OLD_MODEL,
        "data": {"class_path": "alternet_pl.data.SyntheticDataModule"},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(SystemExit) as done:
        fit.main(["--config", str(run / "config.yaml"), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    # the parser fills in what old runs never had: the network's default memory format
    with_defaults = {**GROUPED_MODEL, "network": {**GROUPED_MODEL["network"], "memory_format": "contiguous"}}
    assert printed["model"] == with_defaults and printed["scaling"] == "fast"


def _fit(runs: Path, *flags: str) -> subprocess.CompletedProcess:
    env = launcher_free_env(PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "alternet_pl.fit", *flags]
    done = subprocess.run(cmd, cwd=runs.parent, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _make_old(run: Path) -> None:
    """Rewrite a run, and its last checkpoint, into the layout 3354235's fit wrote."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"] = OLD_MODEL
    config["trainer"]["callbacks"] = None  # the kill that stopped it
    del config["scaling"]  # an option since added
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    path = run / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(path)
    instantiator = checkpoint["hyper_parameters"].get("_instantiator")
    checkpoint["hyper_parameters"] = {**OLD_MODEL, "_instantiator": instantiator}
    states = checkpoint["callbacks"]
    kept = ("NonFiniteLossGuard", "RNGStates", "MetricsRowCount")
    old = {k: v for k, v in states.items() if k.startswith(kept)}
    old.update({k: v for k, v in states.items() if k.startswith("ModelCheckpoint{'monitor': 'val/acc1'")})
    (last,) = [v for k, v in states.items() if k.startswith("LastCheckpoint")]
    old[OLD_LAST_CHECKPOINT] = last  # its last.ckpt was a plain ModelCheckpoint's; no loader or metric states
    checkpoint["callbacks"] = old
    torch.save(checkpoint, path)


@pytest.mark.slow
def test_an_old_run_resumes_from_its_own_config_and_goes_on_as_if_never_stopped(tmp_path):
    """A run of the old layout, stopped after its second epoch, resumed with the command it printed
    (`fit --config RUN/config.yaml --ckpt_path RUN/checkpoints/last.ckpt`), ends bit-identical to a run
    that was never stopped: weights, metrics.csv rows, and the hyperparameters in today's layout."""
    flags = [
        "--config", str(ROOT / "experiments/quickstart.yaml"), "--model.recipe.targets.mixup_alpha=0.8",
        "--data.init_args.num_train=64", "--data.init_args.num_val=32", "--data.init_args.batch_size=16",
        "--trainer.max_epochs=3", "--trainer.log_every_n_steps=1", "--trainer.deterministic=true",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    whole, old = tmp_path / "whole", tmp_path / "old"
    _fit(whole, *flags, f"--runs_dir={whole}")
    kill = ["--trainer.callbacks+=tests.faults.KillAtStep", "--trainer.callbacks.step=10"]
    env = launcher_free_env(PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "alternet_pl.fit", *flags, f"--runs_dir={old}", *kill]
    killed = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    run = old / "quickstart" / "version_0"
    assert killed.returncode == -9 and load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 8
    _make_old(run)
    resumed = _fit(
        old, "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")
    )
    assert "written before the recipe groups" in resumed.stderr
    assert "exists and is not empty" not in resumed.stderr  # a resume goes on in its own run directory
    assert sorted(p.name for p in (old / "quickstart").iterdir()) == ["version_0"]  # the same run folder
    a = load_checkpoint(whole / "quickstart" / "version_0" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert (a["global_step"], a["epoch"]) == (b["global_step"], b["epoch"]) == (12, 2)
    assert b["hyper_parameters"] == a["hyper_parameters"]  # written in today's layout from here on
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    with open(whole / "quickstart" / "version_0" / "metrics.csv") as x, open(run / "metrics.csv") as y:
        assert list(csv.DictReader(x)) == list(csv.DictReader(y))
