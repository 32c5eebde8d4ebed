"""Every paper experiment trains a step end to end (full-size model, its recipe, on a few synthetic
images, since no data set can be downloaded): the recipe's options all work together."""

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    env = {k: v for k, v in os.environ.items() if k != "ALTERNET_RUN_DIR"}
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list(tmp_path.glob("*/version_0"))
    assert len(runs) == 1 and (runs[0] / "checkpoints" / "last.ckpt").is_file()
    assert "val/acc1" in (runs[0] / "metrics.csv").read_text()
