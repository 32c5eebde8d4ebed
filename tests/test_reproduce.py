"""`alternet_pl.reproduce`: the scale files give the same `fit` commands as the old hand-written table,
a bad scale file is one line naming the key, training then reporting goes through `fit` and the report,
and the synthetic corrupted set has the CIFAR-C layout with severities that hurt more and more."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from alternet_pl import reproduce
from alternet_pl.data.synthetic_corruptions import write_synthetic_corruptions
from alternet_pl.errors import CommandFailed, InputError

ROOT = Path(__file__).resolve().parents[1]
#: report.scale_arguments(...) of the code before the move, captured from it (hand-checked); the model flags
#: renamed since (--model.model -> --model.network.name, --model.model_kwargs -> --model.network.kwargs)
BEFORE = json.loads((ROOT / "tests/data/scale_arguments_before.json").read_text())


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # scale files and the configs they name are read from the repository root
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def _fill(table: list[list[str]], data_dir: Path) -> list[list[str]]:
    return [[a.replace("{data_dir}", str(data_dir)) for a in run] for run in table]


def test_scale_files_give_the_old_fit_commands(tmp_path):
    assert reproduce.scale_arguments("smoke") == BEFORE["smoke"]
    assert reproduce.scale_arguments("paper") == BEFORE["paper_local"]  # data/, ddp.yaml, no CIFAR-100-C
    assert reproduce.scale_arguments("paper", str(tmp_path), slurm=True) == _fill(
        BEFORE["paper_slurm"], tmp_path
    )
    (tmp_path / "CIFAR-100-C").mkdir()
    corrupted = reproduce.scale_arguments("paper", str(tmp_path), slurm=False)
    assert corrupted == _fill(BEFORE["paper_local_corrupted"], tmp_path)


def test_environment_picks_data_dir_and_trainer(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert reproduce.scale_arguments("paper") == _fill(BEFORE["paper_slurm"], tmp_path)


def test_every_config_a_scale_names_exists():
    for name in reproduce.available_scales():
        for run in reproduce.load_scale(name).runs:
            for config in run.configs:
                assert Path(config).is_file(), (name, run.name, config)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("runs: []\n", "`runs` is empty"),
        ("run: []\n", "unknown key(s) ['run']"),
        ("runs: [{name: a, configs: [x.yaml], flags: [--y]}]\n", "runs[0]: unknown key(s) ['flags']"),
        ("runs: [{name: a, configs: x.yaml}]\n", "runs[0] must be a list of strings"),
        (
            "runs: [{name: a, configs: [x.yaml], args: [-y, [-z, 3]]}]\n",
            "runs[0] must be a list of strings",
        ),
        ("runs: [{name: a, configs: [x.yaml], args: [[--y, [--z]]]}]\n", "runs[0] must be a list of strings"),
        ("runs: [{name: a, configs: [x.yaml]}]\nprepare: {download: {}}\n", "prepare: unknown key(s)"),
        ("runs: [{name: a, configs: [x.yaml]}]\ntrainer: {cloud: t.yaml}\n", "trainer: unknown key(s)"),
        ("runs: [{name: a, configs: [x.yaml]}]\njobs: 0\n", "jobs=0"),
        ("runs: [{name: a, configs: [x.yaml]}]\njobs: two\n", "jobs='two'"),
    ],
)
def test_bad_scale_file_names_the_key(tmp_path, text, named):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(InputError, match="bad.yaml") as err:
        reproduce.load_scale("bad", folder=tmp_path)
    assert named in str(err.value)


def test_argument_groups_are_spliced_in_place(tmp_path):
    """A group of arguments written once (YAML anchor) and reused gives the commands written out."""
    grouped = (
        "runs:\n"
        "  - {name: a, configs: [x.yaml], args: [--seed=0, &extra [--p=1, '--q={r: 2}'], --last]}\n"
        "  - {name: b, configs: [x.yaml], args: [*extra, --seed=1]}\n"
    )
    written = (
        "runs:\n"
        "  - {name: a, configs: [x.yaml], args: [--seed=0, --p=1, '--q={r: 2}', --last]}\n"
        "  - {name: b, configs: [x.yaml], args: [--p=1, '--q={r: 2}', --seed=1]}\n"
    )
    (tmp_path / "grouped.yaml").write_text(grouped)
    (tmp_path / "written.yaml").write_text(written)
    runs = [reproduce.load_scale(n, folder=tmp_path).runs for n in ("grouped", "written")]
    assert runs[0] == runs[1]
    assert runs[0][0].args == ("--seed=0", "--p=1", "--q={r: 2}", "--last")


def test_unknown_scale_lists_the_known_ones():
    with pytest.raises(InputError) as err:  # run_command: one line, exit 2
        reproduce.main(["--scale", "huge", "--print-commands"])
    assert "no scale 'huge'" in str(err.value) and "paper" in str(err.value) and "smoke" in str(err.value)


def test_print_commands(capsys):
    assert reproduce.main(["--scale", "smoke", "--print-commands"]) is None
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(BEFORE["smoke"])
    assert lines[0].startswith("python -m alternet_pl.fit --config experiments/quickstart.yaml")
    assert "'--model.network.kwargs={layout: [C, C, CC, CC]}'" in lines[0]  # quoted for a shell


def test_main_prepares_trains_then_reports(monkeypatch, tmp_path):
    """Training goes through fit.main once per run, in order, after the scale's data are made; the
    report then draws exactly those run directories into --out."""
    from alternet_pl import fit, report

    calls: list = []
    monkeypatch.setitem(
        reproduce.PREPARE, "synthetic_corruptions", lambda **kw: calls.append(("prepare", kw))
    )
    monkeypatch.setattr(
        fit,
        "main",
        lambda args: calls.append(("fit", args)) or SimpleNamespace(run_dir=Path(f"r{len(calls)}")),
    )
    monkeypatch.setattr(report, "render", lambda runs, args: ("report", runs, args.out))
    out = reproduce.main(["--scale", "smoke", "--out", str(tmp_path)])
    assert calls[0] == ("prepare", {"root": "data/SYNTHETIC-C"})
    assert [c[1] for c in calls[1:]] == BEFORE["smoke"]
    assert out == ("report", [Path(f"r{i}") for i in range(2, 7)], tmp_path)


def _printer(run_dir: str, seconds: float = 0.0, code: int = 0) -> list[str]:
    """A stand-in fit: sleeps, prints its thread setting and a run directory, exits with `code`."""
    script = (
        f"import os, sys, time; time.sleep({seconds}); print('threads', os.environ['OMP_NUM_THREADS']); "
        f"print('Run directory: {run_dir}'); sys.exit({code})"
    )
    return [sys.executable, "-c", script]


def test_processes_return_run_dirs_in_order_with_logs(tmp_path, capsys):
    """The slow first run finishes last, yet the run directories come back in the scale's order; each
    process gets cores / jobs threads and its own log; one line per finished run."""
    names = ["slow", "fast", "third"]
    commands = [_printer("runs/a", 1.5), _printer("runs/b"), _printer("runs/c")]
    out = reproduce.train_in_processes(names, commands, 2, tmp_path / "logs")
    assert out == [Path("runs/a"), Path("runs/b"), Path("runs/c")]
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    for name in names:
        assert f"threads {threads}" in (tmp_path / "logs" / f"{name}.log").read_text()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("training 3 runs, 2 at a time")
    assert [line.split()[1] for line in lines[1:]] == ["fast", "third", "slow"]  # as they finish


def test_a_failed_process_names_its_log_after_the_others_finish(tmp_path):
    commands = [_printer("runs/a", code=1), _printer("runs/b"), [sys.executable, "-c", "print('no dir')"]]
    with pytest.raises(CommandFailed) as err:
        reproduce.train_in_processes(["bad", "good", "silent"], commands, 2, tmp_path)
    message = str(err.value)
    assert message.startswith("2 of 3 runs failed")
    assert f"bad (exit 1; see {tmp_path / 'bad.log'})" in message and "silent (exit 0" in message
    assert "Run directory: runs/b" in (tmp_path / "good.log").read_text()  # the good run still ran


def test_jobs_route_through_processes(monkeypatch, tmp_path):
    """`--jobs 2` (or the scale's `jobs`) runs each fit command as `python -m alternet_pl.fit ...`."""
    seen = {}
    monkeypatch.setattr(
        reproduce,
        "train_in_processes",
        lambda names, commands, jobs, log_dir: seen.update(n=names, c=commands, j=jobs, l=log_dir) or [],
    )
    scale = reproduce.load_scale("smoke")
    monkeypatch.setitem(reproduce.PREPARE, "synthetic_corruptions", lambda **kw: None)
    reproduce.train_scale(scale, jobs=2, log_dir=tmp_path)
    assert seen["j"] == 2 and seen["l"] == tmp_path and seen["n"] == [run.name for run in scale.runs]
    assert [c[3:] for c in seen["c"]] == BEFORE["smoke"]
    assert all(c[:3] == [sys.executable, "-m", "alternet_pl.fit"] for c in seen["c"])
    assert reproduce.load_scale("cpu").jobs == 2


def test_missing_official_csv_stops_before_training(monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "train_scale", lambda *a: pytest.fail("trained despite a bad argument"))
    with pytest.raises(SystemExit) as err:
        reproduce.main(["--scale", "smoke", "--official-csv", "nowhere.csv"])
    assert err.value.code == 2 and "nowhere.csv does not exist" in capsys.readouterr().err


def test_report_points_to_reproduce_for_training(capsys):
    from alternet_pl import report
    from alternet_pl.errors import run_command

    with pytest.raises(SystemExit) as err:
        run_command(report.main, ["--scale", "smoke"])
    assert err.value.code == 2 and "python -m alternet_pl.reproduce --scale smoke" in capsys.readouterr().err


def test_synthetic_corruptions_layout_and_severity(tmp_path):
    root = write_synthetic_corruptions(tmp_path / "C", num_images=24, seed=3)
    labels = np.load(root / "labels.npy")
    assert labels.shape == (5 * 24,) and np.array_equal(labels[:24], labels[24:48])
    clean = None
    for name in ("gaussian_noise", "defocus_blur", "contrast", "brightness"):
        stack = np.load(root / f"{name}.npy")
        assert stack.shape == (5 * 24, 32, 32, 3) and stack.dtype == np.uint8
        if clean is None:
            from alternet_pl.data.synthetic import make_synthetic

            clean, clean_labels = make_synthetic(24, seed=3)
            assert np.array_equal(labels[:24], clean_labels)
        change = [np.abs(s.astype(float) - clean).mean() for s in np.split(stack, 5)]
        assert change[0] < change[-1], (name, change)  # severity 5 hurts more than 1
        if name != "defocus_blur":  # a wider box over a periodic grating is not monotone in this measure
            assert all(a < b for a, b in zip(change, change[1:], strict=False)), (name, change)
    again = write_synthetic_corruptions(tmp_path / "D", num_images=24, seed=3)
    assert (again / "gaussian_noise.npy").read_bytes() == (root / "gaussian_noise.npy").read_bytes()


def test_ctrl_c_stops_the_runs_still_going(tmp_path, monkeypatch):
    """Ctrl-C reaching only this process: the runs still going get SIGINT after a grace period, and
    one that ignores it, SIGKILL after another; then the interrupt goes on up."""
    monkeypatch.setattr(reproduce, "STOP_GRACE_S", (1.0, 2.0))
    monkeypatch.setattr(reproduce.time, "sleep", _interrupt_once(reproduce.time.sleep))
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)",
    ]
    polite = [sys.executable, "-c", "import time; time.sleep(600)"]  # SIGINT ends it
    began = reproduce.time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        reproduce.train_in_processes(["stubborn", "polite"], [stubborn, polite], 2, tmp_path)
    assert 2.5 < reproduce.time.monotonic() - began < 60  # both stopped, not the 600 s they wanted


def _interrupt_once(sleep):
    calls = []

    def fake(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 2:  # the processes have started
            raise KeyboardInterrupt
        sleep(seconds)

    return fake
