"""`analyze` on several ranks (`--devices N`, torchrun, srun): the records one process writes, from rank 0.

The 2-rank run is the real command (Lightning's launcher re-runs it as a second gloo process); the
reference is the same command on one process. Both run on one CPU thread per process (the ranks get
one each: 2 cores / 2 processes), so any difference comes from the split of the work alone.
"""

import json
import math
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from alternet_pl.errors import InputError
from alternet_pl.launch import launcher_layout, plan_ranks
from tests.conftest import launcher_free_env

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")


@pytest.fixture
def no_launcher(monkeypatch):
    for key in [*LAUNCHERS, *[k for k in os.environ if k.startswith("SLURM_")]]:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_rank_counts_follow_torchrun_and_srun_and_bad_combinations_are_one_line(no_launcher):
    assert launcher_layout() is None
    assert plan_ranks(None, None, "cpu").world_size == 1
    assert plan_ranks(2, None, "cpu").world_size == 2
    for args, words in [
        ((0, None, "cpu"), "--devices 0 --num_nodes 1: both must be 1 or more"),
        ((2, None, "cuda:1"), "--device cuda:1 names one GPU; with --devices 2 pass --device cuda"),
        ((2, 4, "cpu"), "--num_nodes 4: start the command on every node with srun or torchrun"),
    ]:
        with pytest.raises(InputError, match=words):
            plan_ranks(*args)
    if torch.cuda.device_count() < 64:
        with pytest.raises(InputError, match="--devices 64: this machine has"):
            plan_ranks(64, None, "cuda")
    # torchrun --nnodes 2 --nproc_per_node 2: 2 per node on 2 nodes, unless the flags contradict it
    torchrun = {"RANK": "3", "GROUP_RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"}
    torchrun["TORCHELASTIC_RUN_ID"] = "none"  # what torchrun sets without --rdzv-id
    for key, value in torchrun.items():
        no_launcher.setenv(key, value)
    assert launcher_layout() == (2, 2)
    assert plan_ranks(None, None, "cpu").world_size == 4
    with pytest.raises(InputError, match="contradict the launcher's 2 process.es. per node on 2 node"):
        plan_ranks(3, None, "cpu")
    for key in torchrun:
        no_launcher.delenv(key)
    # srun with 4 tasks per node on 2 nodes; one task (or an interactive job) is one process
    slurm = {"SLURM_NTASKS": "8", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_NAME": "a"}
    for key, value in slurm.items():
        no_launcher.setenv(key, value)
    assert launcher_layout() == (4, 2)
    no_launcher.setenv("SLURM_NTASKS", "1")
    assert launcher_layout() is None


def test_analyze_refuses_bad_rank_counts_before_any_file(tmp_path, no_launcher, capsys):
    from alternet_pl import analyze
    from alternet_pl.errors import run_command

    out = tmp_path / "out"
    args = ["--model", "vit_cifar_micro", "--data", "synthetic", "--analysis", "landscape"]
    with pytest.raises(SystemExit) as exit_info:
        run_command(analyze.main, [*args, "--device", "cpu", "--devices", "0", "--out_dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and "--devices 0" in err
    assert not out.exists()


# the Hessian in float64 (top-2 and block-wise, 3 batches: 2 on rank 0, 1 on rank 1) and a 3 x 3
# landscape (9 cells: 5 on rank 0, 4 on rank 1), on vit_cifar_micro (29k parameters)
ANALYSES = [
    "--analysis", "hessian", "landscape",
    "--hessian.dtype", "float64", "--hessian.eigen.k", "2", "--hessian.eigen.bottom", "false",
    "--hessian.eigen.max_iter", "12", "--hessian.trace.samples", "0", "--hessian.density.enabled", "false",
    "--hessian.blockwise", "true", "--hessian.data.num_batches", "3", "--hessian.data.batch_size", "2",
    "--landscape.steps", "3", "--landscape.data.num_batches", "2", "--landscape.data.batch_size", "2",
]  # fmt: skip


def _assert_same_numbers(one, two, rel: float) -> None:
    """Every field of two records equal to `rel` (relative), but the run's own bookkeeping."""
    assert type(one) is type(two)
    for f in fields(one):
        if f.name in ("seconds", "world_size"):
            continue
        a, b = getattr(one, f.name), getattr(two, f.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_allclose(b, a, rtol=rel, atol=0, err_msg=f.name)
        elif isinstance(a, float) and not math.isnan(a):
            assert b == pytest.approx(a, rel=rel, abs=0), f.name
        elif isinstance(a, float):
            assert math.isnan(b), f.name
        else:
            assert a == b, f.name


@pytest.mark.slow
def test_analyze_on_two_gloo_ranks_writes_the_records_of_one_process(tmp_path):
    """Hessian (top-k, block-wise) and landscape records of `analyze --devices 2` equal one process's.

    Hessian: rel 1e-10. Each product sums the batches' HVPs on two ranks and then over ranks, where one
    process sums them in one order: float64 rounding (1e-16) that 12 Lanczos steps amplify a little
    (measured: eigenvalues 7e-16, block-wise 1.3e-15, the small residuals 4e-14). Landscape: rel 1e-12,
    in effect exact (measured 0): each cell is computed whole by one rank with the same operations as
    in one process, and gathered. torchrun's 2 ranks: the landscape, to the same 1e-12.
    """
    import timm

    import alternet_pl.models  # noqa: F401

    torch.manual_seed(0)
    torch.save(timm.create_model("vit_cifar_micro", num_classes=10).state_dict(), tmp_path / "w.pt")
    model = ["--model", "vit_cifar_micro", "--model_kwargs", '{"num_classes": 10}', "--weights"]
    common = [*model, str(tmp_path / "w.pt"), "--data", "synthetic", "--device", "cpu", *ANALYSES]
    env = launcher_free_env(OMP_NUM_THREADS="1", JSONARGPARSE_DEPRECATION_WARNINGS="off")
    analyze = [sys.executable, "-m", "alternet_pl.analyze", *common]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    commands = {  # torchrun: the landscape only (its start is what differs), --devices from its variables
        1: [*analyze, "--devices", "1"],
        2: [*analyze, "--devices", "2"],
        "torchrun": [*torchrun, "-m", "alternet_pl.analyze", *common, "--analysis", "landscape"],
    }
    runs = {}
    for key, cmd in commands.items():
        out = tmp_path / f"devices_{key}"
        done = subprocess.run(
            [*cmd, "--out_dir", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[key] = out
        # rank 0 alone prints its lines and writes its files
        printed = [line.split(":")[0] for line in done.stdout.splitlines()]
        assert (printed.count("hessian"), printed.count("landscape")) == (int(key != "torchrun"), 1), (
            done.stdout
        )
    from alternet_pl.analysis.records import load_record

    for name, rel in (("hessian", 1e-10), ("landscape", 1e-12)):
        one, two = (sorted((runs[d] / "analysis" / name).glob("*.json")) for d in (1, 2))
        assert [p.name for p in one] == [p.name for p in two] == ["w-epoch=000.json"], (one, two)
        assert json.loads(two[0].read_text())["world_size"] == 2
        assert json.loads(one[0].read_text())["world_size"] == 1
        _assert_same_numbers(load_record(one[0]), load_record(two[0]), rel)
    one, torchrun_files = (
        sorted((runs[k] / "analysis" / "landscape").glob("*.json")) for k in (1, "torchrun")
    )
    assert json.loads(torchrun_files[0].read_text())["world_size"] == 2
    _assert_same_numbers(load_record(one[0]), load_record(torchrun_files[0]), 1e-12)
    hessian = load_record(runs[2] / "analysis" / "hessian" / "w-epoch=000.json")
    assert len(hessian.eigenvalues) == 2 and len(hessian.block_top_eig) >= 4  # what was compared


def _one_batch_analyses() -> tuple:
    """The Hessian (float64: extremes, trace, density, per-batch spectrum) of ONE batch and the
    landscape of TWO cells, of a small MLP: less work than 3 ranks can share."""
    from alternet_pl.analysis.hessian.options import HessianOptions, SpectrumOptions
    from alternet_pl.analysis.hessian.run import run as hessian_run
    from alternet_pl.analysis.landscape.run import LandscapeOptions
    from alternet_pl.analysis.landscape.run import run as landscape_run
    from alternet_pl.analysis.loss import cross_entropy_loss
    from tests.conftest import make_batches, make_mlp

    model, batches = make_mlp(), make_batches((4,), sizes=(5,))
    spectrum = SpectrumOptions(enabled=True, k=1, which="LA")
    hessian = hessian_run(
        model, cross_entropy_loss, batches, HessianOptions(spectrum=spectrum, dtype="float64")
    )
    landscape = landscape_run(model, cross_entropy_loss, batches, LandscapeOptions(steps=2, dims=1))
    return hessian, landscape


def _on_a_rank_of_three() -> dict:
    """Rank 0's weights after `share_rank_zero_state` (each rank draws its own first), and
    `_one_batch_analyses` (ranks 1 and 2 hold no Hessian batch, rank 2 no landscape cell)."""
    import torch.distributed as dist

    from alternet_pl.launch import share_rank_zero_state

    drawn = torch.nn.Linear(3, 2)
    torch.nn.init.normal_(drawn.weight, generator=torch.Generator().manual_seed(dist.get_rank()))
    share_rank_zero_state(drawn)
    hessian, landscape = _one_batch_analyses()
    return {"weight": drawn.weight.detach().clone(), "hessian": hessian, "landscape": landscape}


@pytest.mark.slow
def test_ranks_share_rank_zero_weights_and_ranks_without_work_change_nothing():
    """Random weights (`--model` without `--weights`) are rank 0's on every rank; more ranks than
    Hessian batches or landscape cells is fine (an idle rank adds zero to each product and gathers
    no cell), so `analyze` does not refuse it."""
    from tests.distributed import run_distributed

    ranks = run_distributed(_on_a_rank_of_three, world_size=3)
    rank_zero = torch.nn.init.normal_(torch.empty(2, 3), generator=torch.Generator().manual_seed(0))
    hessian, landscape = _one_batch_analyses()
    for out in ranks:
        torch.testing.assert_close(out["weight"], rank_zero, rtol=0, atol=0)
        _assert_same_numbers(hessian, out["hessian"], 1e-12)
        _assert_same_numbers(landscape, out["landscape"], 0.0)


@pytest.mark.slow
def test_a_failed_analysis_on_two_ranks_ends_the_command_with_its_error_record(tmp_path):
    """NaN weights: both ranks refuse the landscape before any collective; the command ends (no rank
    left waiting) with exit 3, the error record, no result and the next analysis not started."""
    import timm

    import alternet_pl.models  # noqa: F401

    state = timm.create_model("vit_cifar_micro", num_classes=10).state_dict()
    state["cls_token"] = torch.full_like(state["cls_token"], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "alternet_pl.analyze", "--model", "vit_cifar_micro", "--model_kwargs"]
    cmd += ['{"num_classes": 10}', "--weights", str(tmp_path / "nan.pt"), "--data", "synthetic"]
    cmd += ["--device", "cpu", "--devices", "2", "--analysis", "landscape", "fourier", "--out_dir", str(out)]
    env = launcher_free_env(OMP_NUM_THREADS="1", JSONARGPARSE_DEPRECATION_WARNINGS="off")
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "rank 0: landscape (the weights hold NaN/Inf" in done.stderr
    record = json.loads((out / "analysis" / "landscape" / "nan-epoch=000.error.json").read_text())
    assert record["kind"] == "nonfinite"
    assert sorted(p.name for p in (out / "analysis").rglob("*.json")) == ["nan-epoch=000.error.json"]
