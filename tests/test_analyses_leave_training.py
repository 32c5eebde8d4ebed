"""A fit with the whole light analysis suite (every analysis after every epoch, strict) ends with the
same weights, optimizer state and training / validation metrics as the same fit without analyses."""

import csv
from pathlib import Path

import pytest
import torch
import yaml

from alternet_pl import fit
from alternet_pl.training.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--config",
    str(ROOT / "experiments/quickstart.yaml"),
    "--data.init_args.num_train=64",
    "--data.init_args.num_val=64",
    "--data.init_args.batch_size=32",
    "--model.recipe.targets.mixup_alpha=0.8",
    "--trainer.max_epochs=2",
    "--trainer.deterministic=true",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def _strict_every_epoch(tmp_path: Path) -> Path:
    suite = yaml.safe_load((ROOT / "configs/analysis/light.yaml").read_text())
    for entry in suite["analyses"]:
        entry["init_args"]["strict"] = True  # a failing analysis fails the test
        if not entry["class_path"].endswith("TrajectoryCallback"):  # its PCA needs the end of the path
            entry["init_args"]["schedule"] = {"every_n_epochs": 1, "at": ["fit_start", "fit_end"]}
    path = tmp_path / "light_strict.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _train_rows(run: Path, keys: set[str]) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        rows = [{k: v for k, v in row.items() if k in keys} for row in csv.DictReader(fh)]
    return [r for r in rows if any(v for k, v in r.items() if k not in ("epoch", "step"))]


@pytest.mark.slow
def test_light_suite_leaves_weights_and_metrics_bit_identical(tmp_path):
    plain = fit.main([*FLAGS, f"--runs_dir={tmp_path / 'plain'}"]).run_dir
    suite = _strict_every_epoch(tmp_path)
    analysed = fit.main([*FLAGS, "--config", str(suite), f"--runs_dir={tmp_path / 'analysed'}"]).run_dir
    for name in ("hessian", "landscape", "fourier", "variance", "freq_noise", "lesion"):
        assert (analysed / "analysis" / name / "epoch=001.json").is_file(), name  # ran mid-training
    assert (analysed / "analysis" / "trajectory" / "epoch=002.json").is_file()  # snapshots every epoch
    a = load_checkpoint(plain / "checkpoints" / "last.ckpt")
    b = load_checkpoint(analysed / "checkpoints" / "last.ckpt")
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with open(plain / "metrics.csv", newline="") as fh:
        keys = set(next(csv.reader(fh)))
    assert _train_rows(plain, keys) == _train_rows(analysed, keys)
