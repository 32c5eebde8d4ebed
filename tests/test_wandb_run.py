"""One W&B run per training run: a fit killed (SIGKILL) and resumed with `--ckpt_path last` logs into the
same run id, the steps of both halves, with the whole merged config; `log_model` choices."""

import subprocess
import sys
from pathlib import Path

import pytest

from alternet_pl.errors import InputError
from alternet_pl.loggers import SafeWandbLogger
from alternet_pl.loggers.wandb import RUN_ID_FILE, run_id_for
from alternet_pl.runs import RUN_DIR_ENV
from tests.conftest import launcher_free_env
from tests.wandb_records import read_run

ROOT = Path(__file__).resolve().parents[1]


def test_the_run_id_is_kept_in_the_run_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    first = SafeWandbLogger(project="test", offline=True)
    assert (tmp_path / RUN_ID_FILE).read_text().strip() == first._wandb_init["id"]
    again = SafeWandbLogger(project="test", offline=True)  # a resumed / requeued fit in that directory
    assert again._wandb_init["id"] == first._wandb_init["id"] and again._wandb_init["resume"] == "allow"
    assert run_id_for(tmp_path) == first._wandb_init["id"]


def test_log_model_choices(monkeypatch, tmp_path):
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    chosen = {c: SafeWandbLogger(project="t", log_model=c)._log_model for c in ("off", "last", "all")}
    assert chosen == {"off": False, "last": True, "all": "all"}  # Lightning's: none, at the end, each save
    assert SafeWandbLogger(project="t", log_model=False)._log_model is False
    with pytest.raises(InputError, match="log_model='best'"):
        SafeWandbLogger(project="t", log_model="best")


def _fit(tmp_path, *flags, expect=0):
    cmd = [
        sys.executable, "-m", "alternet_pl.fit",
        "--config", str(ROOT / "experiments/quickstart.yaml"),
        "--config", str(ROOT / "configs/logger/wandb.yaml"),
        f"--runs_dir={tmp_path}", "--trainer.max_epochs=2", "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false", "--data.init_args.num_train=64",
        "--data.init_args.num_val=32", "--data.init_args.batch_size=16",
        "--trainer.logger.init_args.log_model=last", *flags,
    ]  # fmt: skip
    env = launcher_free_env(PYTHONPATH=str(ROOT), WANDB_MODE="offline", WANDB_SILENT="true")
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == expect, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_a_killed_and_resumed_fit_is_one_wandb_run_with_both_halves_and_the_whole_config(tmp_path):
    _fit(tmp_path, "--trainer.callbacks+=tests.faults.KillAtStep", "--trainer.callbacks.step=6", expect=-9)
    _fit(tmp_path, "--ckpt_path", "last")
    run_dir = tmp_path / "quickstart" / "version_0"
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2, files  # one offline directory per process start, to be synced as one run
    halves = [read_run(f) for f in files]
    # W&B names each offline directory offline-run-<time>-<run id> at start-up; the run record inside may be
    # lost to the SIGKILL (W&B writes asynchronously), so the killed half's id is read from its directory
    assert [f.parent.name.rsplit("-", 1)[-1] for f in files] == [run_id, run_id]
    assert halves[1]["id"] == run_id and halves[0]["id"] in (run_id, None)
    steps = [
        sorted({row["trainer/global_step"] for row in h["history"] if "train/loss_step" in row})
        for h in halves
    ]
    # the second half goes on from the end-of-epoch checkpoint (step 4) to the end; the first half's rows
    # start at 0 (the last ones before a SIGKILL may not have reached the file: W&B writes asynchronously)
    # the killed half may lose every row it had not flushed (on a quiet machine it often loses all of them:
    # W&B writes through a service process the SIGKILL takes down); the rows it kept start at 0
    assert (not steps[0] or (steps[0][0] == 0 and max(steps[0]) < 7)) and steps[1] == [4, 5, 6, 7], steps
    config = halves[1]["config"]
    assert {"model", "data", "trainer", "analyses", "seed_everything"} <= config.keys(), config.keys()
    assert config["data"]["init_args"]["num_train"] == 64 and config["trainer"]["max_epochs"] == 2
    assert config["model"]["network"]["name"] == "alternet_cifar_micro"
    artifacts = list(run_dir.glob("wandb/offline-run-*/files/**/*.ckpt")) + list(
        run_dir.glob("wandb/offline-run-*/artifacts/**/*")
    )
    print(artifacts)
