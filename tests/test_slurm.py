"""`reproduce --cluster slurm`: one job array with every run (requeue-safe, resuming with --ckpt_path last),
a report job depending on it, the GPU hours printed; DRY_RUN prints the lines. A stand-in `sbatch` on PATH
records what would be submitted."""

import os
import shlex
import stat
from pathlib import Path

from alternet_pl import reproduce

ROOT = Path(__file__).resolve().parents[1]


def _fake_sbatch(tmp_path: Path) -> Path:
    calls = tmp_path / "calls.txt"
    script = tmp_path / "bin" / "sbatch"
    script.parent.mkdir()
    # each call: its arguments on one line; the job id is 1000 + the number of calls so far
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nwc -l < {calls} | awk '{{print 1000 + $1}}'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return calls


def test_paper_scale_is_one_job_array_and_a_report_job_after_it(tmp_path, monkeypatch, capsys):
    calls = _fake_sbatch(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(ROOT)  # scales and sbatch scripts are read from the repository root
    out = tmp_path / "figures"
    flags = [
        "--scale",
        "paper",
        "--out",
        str(out),
        "--cluster",
        "slurm",
        "--nodes",
        "4",
        "--gpus-per-node",
        "8",
    ]
    reproduce.main([*flags, "--time-hours", "24"])
    array, report = [line.split() for line in calls.read_text().splitlines()]
    runs = reproduce.load_scale("paper").runs
    assert f"--array=0-{len(runs) - 1}" in array and "--requeue" in array and "--signal=USR1@120" in array
    assert {"--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--time=24:00:00"} <= set(array)
    assert array[-2] == "scripts/slurm/array.sbatch"
    lines = Path(array[-1]).read_text().splitlines()
    assert len(lines) == len(runs) == 10
    assert all("configs/trainer/slurm.yaml" in shlex.split(line) for line in lines)  # the faithful fragment
    sbatch = (ROOT / "scripts/slurm/array.sbatch").read_text()
    assert "--ckpt_path last" in sbatch and "#SBATCH --requeue" in sbatch and "--signal=USR1@" in sbatch
    assert report[:3] == ["--parsable", "--dependency=afterok:1001", "scripts/slurm/report.sbatch"]
    assert report[3:] == ["1001", str(out)]
    printed = capsys.readouterr().out
    assert f"up to {10 * 4 * 8 * 24:g} GPU hours" in printed  # 10 runs x 32 GPUs x 24 h
    assert "submitted job array 1001 (10 runs) and report job 1002 (after 1001)" in printed


def test_dry_run_prints_the_sbatch_lines_and_submits_nothing(tmp_path, monkeypatch, capsys):
    calls = _fake_sbatch(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(ROOT)
    reproduce.main(["--scale", "paper", "--out", str(tmp_path / "f"), "--cluster", "slurm", "--dry-run"])
    printed = capsys.readouterr().out.splitlines()
    assert not calls.exists()
    assert printed[-2].startswith("ARRAY_ID=$(sbatch --parsable --array=0-9 --nodes=1 --ntasks-per-node=8")
    assert printed[-1].startswith(
        'sbatch --parsable --dependency=afterok:"$ARRAY_ID" scripts/slurm/report.sbatch'
    )
    assert "up to 3840 GPU hours" in printed[0]  # 10 runs x 8 GPUs x 48 h


def test_every_sbatch_script_requeues_and_resumes_with_gpus_from_the_command():
    for script in sorted((ROOT / "scripts/slurm").glob("*.sbatch")):
        text = script.read_text()
        assert "--gpus-per-node=" not in "".join(
            line for line in text.splitlines() if line.startswith("#SBATCH")
        )
        if script.name not in ("report.sbatch", "analyze.sbatch"):  # no training to resume
            assert "#SBATCH --requeue" in text and "#SBATCH --signal=USR1@" in text, script.name
            assert "--ckpt_path last" in text, script.name
