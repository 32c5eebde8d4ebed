"""Validation under DDP counts each sample once, on a set that does not divide by the number of ranks."""

import csv
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from alternet_pl.data import SyntheticDataModule
from alternet_pl.training.checkpoints import load_checkpoint
from tests.conftest import launcher_free_env
from tests.distributed import run_distributed

ROOT = Path(__file__).resolve().parents[1]


def _seen_by_this_rank(num_val: int) -> list[int]:
    dm = SyntheticDataModule(num_train=8, num_val=num_val, batch_size=2)
    loader = dm.val_dataloader()
    return [i for batch in loader.batch_sampler for i in batch]


def test_each_validation_sample_is_read_by_exactly_one_rank():
    seen = run_distributed(_seen_by_this_rank, world_size=2, args=(7,))
    assert sorted(seen[0] + seen[1]) == list(range(7))  # Lightning's default pads to 8: sample 0 twice
    assert (len(seen[0]), len(seen[1])) == (4, 3)


@pytest.mark.slow
def test_ddp_validation_metrics_equal_a_single_process_validation(tmp_path):
    """2-process DDP fit (gloo) on 33 validation images; its val/* equal one process's on its checkpoint."""
    cmd = [
        sys.executable,
        "-m",
        "alternet_pl.fit",
        "--config",
        str(ROOT / "experiments/quickstart.yaml"),
        f"--runs_dir={tmp_path}",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--data.init_args.num_train=32",
        "--data.init_args.num_val=33",
        "--data.init_args.batch_size=8",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
    ]
    env = launcher_free_env()
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "quickstart" / "version_0"
    with open(run / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val/loss")]
    ddp = {k: float(rows[-1][k]) for k in ("val/loss", "val/acc1")}

    from alternet_pl.training.module import ImageClassifier

    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    module = ImageClassifier.from_config(
        {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    )
    module.load_state_dict(checkpoint["state_dict"])
    # batch_size is the global batch: each of the 2 ranks evaluates batches of 4. val/loss is the authors'
    # mean of per-batch means, so the single process evaluates batches of 4 too (at 8 it differs by 1e-3).
    dm = SyntheticDataModule(num_train=32, num_val=33, batch_size=4)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    single = trainer.validate(module, datamodule=dm, verbose=False)[0]
    assert ddp["val/acc1"] == pytest.approx(single["val/acc1"], abs=1e-6)
    assert ddp["val/loss"] == pytest.approx(single["val/loss"], rel=1e-5)
    assert torch.isfinite(torch.tensor(single["val/loss"]))
