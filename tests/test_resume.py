"""Resume: a run killed (SIGKILL) and resumed from its last checkpoint, written at an epoch end, after a
mid-epoch step (`--checkpoint_every_n_steps`, one process or 2 DDP processes) or on SLURM's warning
signal (mid-epoch or on an epoch's last batch), or killed before its end-of-fit analyses, ends
bit-identical to one that was never interrupted (weights, optimizer state, metrics.csv, analysis
records), with `num_workers` 0 and 2; `--ckpt_path last` goes on in the same directory."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from alternet_pl.data import SyntheticDataModule
from alternet_pl.training import resume
from alternet_pl.training.checkpoints import SafeCheckpointIO, load_checkpoint
from alternet_pl.training.module import ImageClassifier, Network
from alternet_pl.training.recipe import Recipe, TargetOptions
from alternet_pl.training.schedules import LRSchedule
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


def _tiny_fit(
    root: Path,
    workers: int = 0,
    ckpt_path: str | None = None,
    every_step: bool = False,
    extra: tuple[pl.Callback, ...] = (),
):
    """In-process: micro AlterNet, 24 augmented images in batches of 8 (3 steps an epoch), Mixup,
    dropout-free; with `every_step`, a checkpoint after every step (step=N.ckpt); `extra` callbacks."""
    pl.seed_everything(0)
    callbacks = [resume.RNGStates(), resume.LoaderPosition(), resume.MetricStates(), *extra]
    if every_step:
        callbacks.append(
            ModelCheckpoint(
                dirpath=str(root / "ckpts"), filename="{step}", every_n_train_steps=1, save_top_k=-1
            )
        )
    trainer = pl.Trainer(
        default_root_dir=str(root),
        accelerator="cpu",
        max_epochs=3,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=callbacks,
        plugins=[SafeCheckpointIO()],
    )
    recipe = Recipe(schedule=LRSchedule(warmup_epochs=1), targets=TargetOptions(mixup_alpha=0.8))
    module = ImageClassifier(Network("alternet_cifar_micro"), num_classes=4, recipe=recipe)
    data = SyntheticDataModule(
        num_train=24, num_val=8, num_classes=4, batch_size=8, num_workers=workers, auto_augment="rand-m9-n2"
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return module, trainer


def test_resume_from_a_mid_epoch_checkpoint_in_process_is_exact(tmp_path):
    """Fast: resuming from the step-7 checkpoint (one batch into epoch 3) ends with the weights of the
    uninterrupted run: the loader starts at the right batch (LoaderPosition), with the same
    augmentations (per-image seeds), and Mixup draws the same (RNGStates)."""
    whole, _ = _tiny_fit(tmp_path / "whole", every_step=True)
    mid = tmp_path / "whole" / "ckpts" / "step=7.ckpt"  # in the last epoch: its averages span the restart
    assert load_checkpoint(mid)["callbacks"]["LoaderPosition"] == {"epoch": 2, "batches": 1}
    resumed, trainer = _tiny_fit(tmp_path / "resumed", ckpt_path=str(mid))
    assert trainer.global_step == 9
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # the last epoch's averages cover all its batches (MetricStates), the same as uninterrupted
    assert trainer.logged_metrics["train/loss_epoch"] == whole.trainer.logged_metrics["train/loss_epoch"]
    assert trainer.logged_metrics["train/acc1"] == whole.trainer.logged_metrics["train/acc1"]


class _SignalInOptimizerStep(pl.Callback):
    """SIGUSR1 from inside the optimizer step of global step `step` (where Lightning's own handler would
    save the weights half-way through their update)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


def test_slurm_signal_mid_step_is_saved_at_the_batch_end_and_requeued_when_the_next_starts(
    tmp_path, monkeypatch
):
    """Fast, in-process, under a simulated SLURM job: the signal lands in step 5's optimizer step;
    `hpc_ckpt_1.ckpt` is written at that batch's end (global step 5, 2 batches into epoch 2) and the
    job requeued once, when the next batch starts, after the save (the requeue is recorded, the run goes
    on). A run resumed from that checkpoint ends with the signalled run's weights: it held the state
    the run went on from (saved in the handler, it would hold a batch half done)."""
    from alternet_pl.training import requeue

    slurm = {"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "alternet", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}
    for key, value in {**slurm, "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(key, value)
    requeued = []
    monkeypatch.setattr(
        requeue, "requeue_slurm_job", lambda: requeued.append(sorted(tmp_path.rglob("hpc_*")))
    )
    signalled, _ = _tiny_fit(
        tmp_path / "signalled", extra=(_SignalInOptimizerStep(4), requeue.RequeueAtBatchEnd())
    )
    hpc = tmp_path / "signalled" / "hpc_ckpt_1.ckpt"
    assert requeued == [[hpc]]  # once, after the save
    saved = load_checkpoint(hpc)
    assert saved["global_step"] == 5 and saved["callbacks"]["LoaderPosition"] == {"epoch": 1, "batches": 2}
    resumed, _ = _tiny_fit(tmp_path / "resumed", ckpt_path=str(hpc))
    for (name, a), b in zip(signalled.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_loader_position_and_rng_states_round_trip():
    """The two states `fit` adds to checkpoints: what they save is what they restore."""
    import random

    import numpy as np

    states = resume.RNGStates()
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    saved = load_checkpoint_roundtrip(states.state_dict())
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(9), random.seed(9), np.random.seed(9)
    states.load_state_dict(saved)
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]

    class Data:
        def resume_at(self, epoch, batches):
            self.at = (epoch, batches)

    position = resume.LoaderPosition()
    position._trainer = type("T", (), {"datamodule": Data()})()
    position.load_state_dict({"epoch": 4, "batches": 7})
    assert position._trainer.datamodule.at == (4, 7) and position.state_dict() == {"epoch": 4, "batches": 7}


def load_checkpoint_roundtrip(state):
    """A state through torch.save and the weights-only reader (what a checkpoint does to it)."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_training_order_and_augmentations_do_not_depend_on_workers_or_restarts():
    """The loader's batches are a function of (seed, epoch, position): 0 and 2 workers read the
    same; a loader started at batch 2 of epoch 1 reads what the whole epoch's loader reads from there."""
    data = SyntheticDataModule(
        num_train=20, num_val=4, num_classes=4, batch_size=4, auto_augment="rand-m9-n2"
    )
    data.setup()

    def epoch_batches(loader, epoch):
        loader.sampler.set_epoch(epoch)
        return list(loader)

    zero = data.train_dataloader()
    first, second = epoch_batches(zero, 0), epoch_batches(zero, 1)
    assert not torch.equal(first[0][0], second[0][0])  # another order / augmentation each epoch
    data.num_workers = 2
    two = epoch_batches(data.train_dataloader(), 1)
    data.num_workers = 0
    data.resume_at(1, 2)
    rest = list(data.train_dataloader())
    assert len(rest) == 3 and len(data.train_dataloader()) == 5
    for a, b in zip(second, two):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for a, b in zip(second[2:], rest):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


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


def _records(run: Path) -> dict[str, dict]:
    """Every analysis record of a run (json), less its wall-clock seconds."""
    found = {}
    for path in sorted((run / "analysis").glob("*/*.json")):
        record = json.loads(path.read_text())
        record.pop("seconds", None)
        found[f"{path.parent.name}/{path.name}"] = record
    return found


def assert_same_run(whole: Path, resumed: Path) -> None:
    """Bit for bit: final weights, optimizer state, loop position, analysis records, metrics.csv."""
    a = load_checkpoint(whole / "checkpoints" / "last.ckpt")
    b = load_checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert (a["global_step"], a["epoch"]) == (b["global_step"], b["epoch"]) == (12, 2)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert opt_a.keys() == opt_b.keys() and opt_a
    for index, state in opt_a.items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b[index][name])), (index, name)
    records, again = _records(whole), _records(resumed)
    assert len(records) == 4 and records.keys() == again.keys()  # fourier x3, trajectory x1
    for name, record in records.items():
        for key, value in record.items():
            assert value == again[name].get(key), (name, key, value, again[name].get(key))
    rows, rows_again = _rows(whole), _rows(resumed)
    assert len(rows) == len(rows_again)
    for index, (row, row_again) in enumerate(zip(rows, rows_again)):
        assert row == row_again, index


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


@pytest.fixture(scope="module")
def uninterrupted_with_analyses(tmp_path_factory) -> Path:
    """One run never interrupted (the SLURM cases compare with it; the loader reads the same batches
    with any number of workers, so one reference serves num_workers 0 and 2)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    analyses = root / "analyses.yaml"
    analyses.write_text(ANALYSES)
    _fit(root / "runs", "--config", str(analyses))
    return root / "runs" / "quickstart" / "version_0"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "step", "position"),
    [
        (0, 6, {"epoch": 1, "batches": 2}),  # the 2nd of epoch 2's 4 batches
        (2, 6, {"epoch": 1, "batches": 2}),
        (0, 8, {"epoch": 2, "batches": 0}),  # epoch 2's last batch: saved after its validation and analyses
    ],
)
def test_slurm_warning_signal_saves_requeues_and_the_requeued_job_resumes(
    tmp_path, uninterrupted_with_analyses, workers, step, position
):
    """SIGUSR1 under a (simulated) SLURM job, sent in the batch hooks of global step `step` (where
    Lightning's own handler would save before the step's metrics row is logged): `hpc_ckpt_1.ckpt` is
    written at the batch's end, or at the epoch's end for an epoch's last batch, then `scontrol requeue
    <job>` (a stand-in that records the call and kills the job, as SLURM does) runs when the next batch
    starts; the requeued start with the same job id and `--ckpt_path last` finishes the run in
    job_<id>/, bit-identical to a run never interrupted, metrics.csv included."""
    analyses = tmp_path / "analyses.yaml"
    analyses.write_text(ANALYSES)
    flags = ("--config", str(analyses), f"--data.init_args.num_workers={workers}")
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
            *flags,
            *extra,
        ]
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
        assert done.returncode == expect, done.stderr[-3000:]
        return done

    fit("--trainer.callbacks+=tests.faults.SignalAtStep", f"--trainer.callbacks.step={step}", expect=-9)
    run = runs / "quickstart" / "job_4242"
    assert calls.read_text().split() == ["requeue", "4242"]
    hpc = load_checkpoint(run / "hpc_ckpt_1.ckpt")
    assert hpc["global_step"] == step and hpc["callbacks"]["LoaderPosition"] == position
    fit(expect=0)
    assert sorted(p.name for p in (runs / "quickstart").iterdir()) == ["job_4242"]
    final = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert (final["global_step"], final["epoch"]) == (12, 2)
    steps = [int(r["step"]) for r in _rows(run) if r.get("train/loss_step")]
    assert steps == list(range(12))  # every step logged once, the signalled one included
    assert_same_run(uninterrupted_with_analyses, run)


@pytest.mark.slow
def test_end_of_fit_analyses_a_kill_interrupted_run_on_resume(tmp_path, uninterrupted_with_analyses):
    """Killed when training ended, before its end-of-fit analysis (the trajectory) ran: `last.ckpt`
    holds the finished training, so Lightning does no more; `fit --ckpt_path last` runs the analysis
    (`resume.finish_fit_end_analyses`) and the run equals the uninterrupted one (records and rows)."""
    analyses = tmp_path / "analyses.yaml"
    analyses.write_text(ANALYSES)
    broken = tmp_path / "broken"
    kill = "--trainer.callbacks+=tests.faults.KillAtTrainEnd"
    killed = _fit(broken, "--config", str(analyses), kill, expect=-9)
    run = broken / "quickstart" / "version_0"
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 12, killed.stderr[-2000:]
    assert sorted(_records(run)) == [
        "fourier/epoch=001.json",
        "fourier/epoch=002.json",
        "fourier/epoch=003.json",
    ]
    _fit(broken, "--config", str(analyses), "--ckpt_path=last")
    assert sorted(p.name for p in (broken / "quickstart").iterdir()) == ["version_0"]
    assert_same_run(uninterrupted_with_analyses, run)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_right_after_a_mid_epoch_step_checkpoint_resumes_bit_identical(tmp_path, workers):
    """`--checkpoint_every_n_steps 3` (4 steps an epoch): killed right after the step-9 checkpoint,
    one batch into epoch 3; the resumed run reads the rest of that epoch exactly."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    analyses = tmp_path / "analyses.yaml"
    analyses.write_text(ANALYSES)
    flags = (
        "--config",
        str(analyses),
        "--checkpoint_every_n_steps=3",
        f"--data.init_args.num_workers={workers}",
    )
    _fit(whole, *flags)
    kill = (
        "--trainer.callbacks+=tests.faults.KillAtStep",
        "--trainer.callbacks.step=9",
        "--trainer.callbacks.after_checkpoint=true",
    )
    killed = _fit(broken, *flags, *kill, expect=-9)
    run = broken / "quickstart" / "version_0"
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 9, killed.stderr[-2000:]
    assert ckpt["callbacks"]["LoaderPosition"] == {"epoch": 2, "batches": 1}
    _fit(broken, *flags, "--ckpt_path=last")
    assert sorted(p.name for p in (broken / "quickstart").iterdir()) == ["version_0"]
    assert_same_run(whole / "quickstart" / "version_0", run)


@pytest.mark.slow
def test_ddp_sigkill_after_a_mid_epoch_step_checkpoint_resumes_bit_identical(tmp_path):
    """2 gloo processes on the CPU (8 images a rank a step): killed right after the step-9 checkpoint,
    one batch into the last epoch; the resumed 2-process run equals the uninterrupted one. Each rank
    reads its own share from the saved position and keeps its own torchmetrics sums (`MetricStates`),
    so the last epoch's averages, synchronised over both ranks, span the restart."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    analyses = tmp_path / "analyses.yaml"
    analyses.write_text(ANALYSES)
    ddp = ("--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu")
    flags = ("--config", str(analyses), "--checkpoint_every_n_steps=3", *ddp)
    _fit(whole, *flags)
    kill = (
        "--trainer.callbacks+=tests.faults.KillAtStep",
        "--trainer.callbacks.step=9",
        "--trainer.callbacks.after_checkpoint=true",
    )
    _fit(broken, *flags, *kill, expect=-9)
    run = broken / "quickstart" / "version_0"
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 9 and ckpt["callbacks"]["LoaderPosition"] == {"epoch": 2, "batches": 1}
    assert ckpt["callbacks"]["MetricStates"]["train_loss"]["ranks"] == 2
    _fit(broken, *flags, "--ckpt_path=last")
    assert sorted(p.name for p in (broken / "quickstart").iterdir()) == ["version_0"]
    assert_same_run(whole / "quickstart" / "version_0", run)


def _fit_in_process(runs: Path, capsys, *extra: str) -> tuple[int, str]:
    from alternet_pl import fit
    from alternet_pl.errors import run_command

    args = [*FLAGS, f"--runs_dir={runs}", "--trainer.max_epochs=2", "--checkpoint_every_n_steps=3", *extra]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_command(fit.main, args)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()[-1]


def test_ctrl_c_mid_training_says_what_was_kept_and_how_to_go_on(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ALTERNET_DEBUG", raising=False)
    runs = tmp_path / "runs"
    code, line = _fit_in_process(
        runs, capsys, "--trainer.callbacks+=tests.faults.InterruptAtStep", "--trainer.callbacks.step=5"
    )
    run = runs / "quickstart" / "version_0"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert code == 2 and line.startswith("interrupted: stopped by Ctrl-C; kept ")
    assert f"--ckpt_path {ckpt}" in line and load_checkpoint(ckpt)["global_step"] == 4


def test_full_disk_mid_training_is_one_line_and_keeps_the_run(tmp_path, capsys, monkeypatch):
    """ENOSPC on the second checkpoint write (step 3): one line, exit 2, the first checkpoint kept."""
    import errno

    from alternet_pl.training import checkpoints

    monkeypatch.delenv("ALTERNET_DEBUG", raising=False)
    real, calls = checkpoints.atomic_torch_save, []

    def filling_up(obj, path, save=None):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(obj, path, save)

    monkeypatch.setattr(checkpoints, "atomic_torch_save", filling_up)
    runs = tmp_path / "runs"
    code, line = _fit_in_process(runs, capsys)
    run = runs / "quickstart" / "version_0"
    assert code == 2 and line.startswith("error: the disk is full writing ") and f"kept {run}" in line
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 3
