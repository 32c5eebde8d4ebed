"""A real 2-process DDP fit on the CPU (gloo) with every light analysis: one run directory shared by
both ranks, and every analysis written once, from rank 0, computed with world size 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import launcher_free_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ddp_fit_on_two_cpu_processes_shares_one_run_directory(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "alternet_pl.fit",
        "--config",
        str(ROOT / "experiments/quickstart.yaml"),
        "--config",
        str(ROOT / "configs/analysis/light.yaml"),
        f"--runs_dir={tmp_path}",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--data.init_args.num_train=64",
        "--data.init_args.num_val=32",
        "--data.init_args.batch_size=16",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
    ]
    env = launcher_free_env()
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "quickstart").iterdir())
    assert runs == ["version_0"], runs  # rank 1 did not make its own directory
    run = tmp_path / "quickstart" / "version_0"
    assert (run / "metrics.csv").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert "Run directory:" in done.stdout
    import json

    for name in ("hessian", "landscape", "trajectory", "fourier", "variance", "freq_noise", "lesion"):
        files = sorted((run / "analysis" / name).glob("epoch=002.json"))
        assert len(files) == 1, (name, done.stderr[-2000:])
        assert json.loads(files[0].read_text())["world_size"] == 2
