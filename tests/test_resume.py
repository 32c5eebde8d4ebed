"""Resume: a run killed mid-epoch and resumed from its last checkpoint ends bit-identical to one that
was never interrupted (weights and metrics.csv); `--ckpt_path last` goes on in the same directory."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alternet_pl.training.checkpoints import load_checkpoint
from tests.conftest import launcher_free_env

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--config",
    str(ROOT / "experiments/quickstart.yaml"),
    "--data.init_args.num_train=64",
    "--data.init_args.num_val=32",
    "--data.init_args.batch_size=16",
    "--data.init_args.auto_augment=rand-m9-n2-mstd1.0",  # random augmentations must replay too
    "--model.recipe.targets.mixup_alpha=0.8",  # and Mixup's draws
    "--trainer.max_epochs=3",
    "--trainer.log_every_n_steps=1",
    "--trainer.deterministic=true",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def _fit(runs: Path, *extra: str, expect: int = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in launcher_free_env().items() if not k.startswith("SLURM")}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "alternet_pl.fit", *FLAGS, f"--runs_dir={runs}", *extra]
    done = subprocess.run(cmd, cwd=runs.parent, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == expect, done.stderr[-3000:]
    return done


ANALYSES = """\
analyses:
  - class_path: alternet_pl.callbacks.FourierCallback
    init_args:
      data: {num_batches: 1, batch_size: 16}
      schedule: {every_n_epochs: 1, at: []}
      strict: true
  - class_path: alternet_pl.callbacks.TrajectoryCallback
    init_args:
      steps: 3
      data: {num_batches: 1, batch_size: 16}
      strict: true
"""


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    analyses = tmp_path / "analyses.yaml"
    analyses.write_text(ANALYSES)
    _fit(whole, "--config", str(analyses))
    kill = ("--trainer.callbacks+=tests.faults.KillAtStep", "--trainer.callbacks.step=10")
    killed = _fit(broken, "--config", str(analyses), *kill, expect=-9)
    run = broken / "quickstart" / "version_0"
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 8, killed.stderr[-2000:]
    resumed = _fit(broken, "--config", str(analyses), "--ckpt_path=last")
    assert sorted(p.name for p in (broken / "quickstart").iterdir()) == ["version_0"]  # same directory
    assert "resume with:" in resumed.stdout
    a = load_checkpoint(whole / "quickstart" / "version_0" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert (a["global_step"], a["epoch"]) == (b["global_step"], b["epoch"]) == (12, 2)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert _rows(whole / "quickstart" / "version_0") == _rows(run)
    # the analyses: each epoch's run logged once (none repeated, none skipped), the same numbers
    fourier = [r["step"] for r in _rows(run) if any(v for k, v in r.items() if k.startswith("fourier/"))]
    assert len(fourier) == 3 and len(set(fourier)) == 3
    for name, stem in [("fourier", "epoch=001"), ("fourier", "epoch=003"), ("trajectory", "epoch=003")]:
        x = json.loads((whole / "quickstart" / "version_0" / "analysis" / name / f"{stem}.json").read_text())
        y = json.loads((run / "analysis" / name / f"{stem}.json").read_text())
        x.pop("seconds", None), y.pop("seconds", None)
        assert x == y, name  # the trajectory's path uses every snapshot, kept across the kill


@pytest.mark.slow
def test_slurm_warning_signal_saves_requeues_and_the_requeued_job_resumes(tmp_path):
    """SIGUSR1 under a (simulated) SLURM job: Lightning writes hpc_ckpt_1.ckpt and calls
    `scontrol requeue <job>` (a stand-in that records the call and kills the job, as SLURM does);
    the requeued start with the same job id and `--ckpt_path last` finishes the run in job_<id>/."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.log"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nkill -9 $PPID\n')
    scontrol.chmod(0o755)
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "alternet",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
        "SLURM_JOB_NUM_NODES": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    runs = tmp_path / "runs"

    def fit(*extra: str, expect: int) -> subprocess.CompletedProcess:
        env = {k: v for k, v in launcher_free_env().items() if not k.startswith("SLURM")}
        env.update(slurm, PYTHONPATH=str(ROOT))
        cmd = [
            sys.executable,
            "-m",
            "alternet_pl.fit",
            *FLAGS,
            f"--runs_dir={runs}",
            "--ckpt_path=last",
            *extra,
        ]
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
        assert done.returncode == expect, done.stderr[-3000:]
        return done

    fit("--trainer.callbacks+=tests.faults.SignalAtStep", "--trainer.callbacks.step=6", expect=-9)
    run = runs / "quickstart" / "job_4242"
    assert calls.read_text().split() == ["requeue", "4242"]
    assert load_checkpoint(run / "hpc_ckpt_1.ckpt")["global_step"] == 6
    fit(expect=0)
    assert sorted(p.name for p in (runs / "quickstart").iterdir()) == ["job_4242"]
    final = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert (final["global_step"], final["epoch"]) == (12, 2)
    steps = [int(r["step"]) for r in _rows(run) if r.get("train/loss_step")]
    assert steps == sorted(set(steps)) and steps[-1] == 11  # no step logged twice, none after the end
