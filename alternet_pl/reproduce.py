"""`python -m alternet_pl.reproduce --scale smoke|paper --out DIR`: train a scale's runs, then report.

A scale is a YAML file, `configs/scales/<scale>.yaml` (read from the working directory, like every
`--config`): which runs to train (each a list of `fit` config files plus arguments), which data to
make first, and a few rules that depend on the machine (the trainer config inside a SLURM job, the
data folder, an optional corrupted set). Adding a scale means adding a file; this module only turns
a scale into `fit` arguments and runs them. The report (`alternet_pl.report`) then draws every figure
from the run directories; `make reproduce-figures RUNS=...` redraws without training.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alternet_pl.data.natural import write_natural_corruptions
from alternet_pl.data.synthetic_corruptions import write_synthetic_corruptions
from alternet_pl.errors import CommandFailed, InputError, run_command
from alternet_pl.runs import RUN_DIRECTORY_LINE, global_rank_from_env

__all__ = [
    "PREPARE",
    "SCALES_DIR",
    "Scale",
    "ScaleRun",
    "WhenPresent",
    "available_scales",
    "load_scale",
    "main",
    "scale_arguments",
    "train_in_processes",
    "train_scale",
]

#: where the scale files live, relative to the working directory (the repository root)
SCALES_DIR = Path("configs/scales")

#: data a scale can make before training (its `prepare:` keys): name -> function taking the keywords
PREPARE: dict[str, Callable[..., Any]] = {
    "synthetic_corruptions": write_synthetic_corruptions,
    "natural_corruptions": write_natural_corruptions,
}


@dataclass(frozen=True)
class ScaleRun:
    """One run of a scale: `fit --config c1 [--config c2 ...] args...`."""

    name: str
    configs: tuple[str, ...]
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class WhenPresent:
    """Arguments added to the runs that use `config` when `<data dir>/<folder>` exists ("{path}" in an
    argument stands for that folder)."""

    folder: str
    config: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Scale:
    """A scale as data: its runs and the machine-dependent rules of `fit_arguments`."""

    name: str
    runs: tuple[ScaleRun, ...]
    #: "local" / "slurm" -> trainer config inserted after each run's first config
    trainer: Mapping[str, str] = field(default_factory=dict)
    #: append `--data.init_args.root=<data dir>` to every run
    data_root: bool = False
    when_present: tuple[WhenPresent, ...] = ()
    #: `PREPARE` name -> keyword arguments, made before the first run trains
    prepare: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: how many runs train at once on one machine (`--cluster local`); each gets cores / jobs threads
    jobs: int = 1

    def fit_arguments(self, data_dir: str | None = None, slurm: bool | None = None) -> list[list[str]]:
        """The `fit` arguments of each run. `data_dir` defaults to $DATA_DIR, else data/; `slurm`
        (which trainer config) to whether this process runs inside a SLURM job."""
        data_dir = data_dir or os.environ.get("DATA_DIR") or "data"
        slurm = bool(os.environ.get("SLURM_JOB_ID")) if slurm is None else slurm
        trainer = self.trainer.get("slurm" if slurm else "local")
        out = []
        for run in self.runs:
            args = [a for config in run.configs for a in ("--config", config)] + list(run.args)
            if trainer:
                args[2:2] = ["--config", trainer]
            if self.data_root:
                args.append(f"--data.init_args.root={data_dir}")
            for rule in self.when_present:
                folder = Path(data_dir) / rule.folder
                if rule.config in run.configs and folder.is_dir():
                    args += [a.replace("{path}", str(folder)) for a in rule.args]
            out.append(args)
        return out


def available_scales(folder: Path = SCALES_DIR) -> list[str]:
    """The scale names (file stems) in `folder`, sorted."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


def _arguments(value: Any, where: str) -> tuple[str, ...]:
    """A run's `args`: strings, or lists of strings spliced in place (a group written once with a
    YAML anchor, `- &hessian [...]`, and reused as `- *hessian`)."""
    if not isinstance(value, list):
        raise InputError(f"{where} must be a list of strings (or of lists of strings), got {value!r}")
    flat: list[str] = []
    for item in value:
        flat += _strings(item, where) if isinstance(item, list) else _strings([item], where)
    return tuple(flat)


def _check_keys(data: Any, allowed: set[str], required: set[str], where: str) -> dict:
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a mapping, got {type(data).__name__}")
    if unknown := sorted(set(data) - allowed):
        raise InputError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    if missing := sorted(required - set(data)):
        raise InputError(f"{where}: missing key(s) {missing}")
    return data


def load_scale(name: str, folder: Path = SCALES_DIR) -> Scale:
    """Read and check `<folder>/<name>.yaml`. Raises `InputError` naming the file and the bad key."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(available_scales(folder)) or f"none: no {folder}/*.yaml here"
        raise InputError(
            f"no scale {name!r} ({path} not found; run from the repository root); known: {known}"
        )
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    data = _check_keys(
        raw, {"runs", "trainer", "data_root", "when_present", "prepare", "jobs"}, {"runs"}, str(path)
    )
    runs = []
    for i, run in enumerate(data["runs"] or []):
        where = f"{path}: runs[{i}]"
        run = _check_keys(run, {"name", "configs", "args"}, {"name", "configs"}, where)
        configs, args = _strings(run["configs"], where), _arguments(run.get("args", []), where)
        runs.append(ScaleRun(str(run["name"]), configs, args))
    rules = []
    for i, rule in enumerate(data.get("when_present") or []):
        where = f"{path}: when_present[{i}]"
        rule = _check_keys(rule, {"folder", "config", "args"}, {"folder", "config", "args"}, where)
        rules.append(WhenPresent(str(rule["folder"]), str(rule["config"]), _strings(rule["args"], where)))
    trainer = _check_keys(data.get("trainer") or {}, {"local", "slurm"}, set(), f"{path}: trainer")
    prepare = _check_keys(data.get("prepare") or {}, set(PREPARE), set(), f"{path}: prepare")
    if not runs:
        raise InputError(f"{path}: `runs` is empty; list at least one run")
    jobs = data.get("jobs", 1)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InputError(f"{path}: jobs={jobs!r}; use a whole number >= 1 (runs trained at once)")
    return Scale(
        name=name,
        runs=tuple(runs),
        trainer={k: str(v) for k, v in trainer.items()},
        data_root=bool(data.get("data_root", False)),
        when_present=tuple(rules),
        prepare={k: dict(v or {}) for k, v in prepare.items()},
        jobs=jobs,
    )


def scale_arguments(scale: str, data_dir: str | None = None, slurm: bool | None = None) -> list[list[str]]:
    """The `fit` arguments of each run of the scale named `scale` (see `Scale.fit_arguments`)."""
    return load_scale(scale).fit_arguments(data_dir, slurm)


def train_scale(
    scale: Scale, data_dir: str | None = None, jobs: int | None = None, log_dir: Path | None = None
) -> list[Path]:
    """Make the scale's data, train its runs (with their analyses); return their run directories, in
    the scale's order. `jobs` (default: the scale's) runs train at once, each in its own process with
    cores / jobs threads and its output in `<log_dir>/<run name>.log`; one job trains in this process.

    Raises:
        CommandFailed: a run failed (the others still trained); the message names its log.
    """
    for name, kwargs in scale.prepare.items():
        PREPARE[name](**kwargs)
    arguments = scale.fit_arguments(data_dir)
    jobs = min(jobs or scale.jobs, len(arguments))
    if jobs == 1:
        from alternet_pl import fit

        return [fit.main(args).run_dir for args in arguments]
    commands = [[sys.executable, "-m", "alternet_pl.fit", *args] for args in arguments]
    return train_in_processes(
        [run.name for run in scale.runs], commands, jobs, log_dir or Path("runs") / "logs"
    )


def train_in_processes(names: list[str], commands: list[list[str]], jobs: int, log_dir: Path) -> list[Path]:
    """Run each `fit` command in its own process, `jobs` at a time, each with cores / jobs threads and
    its output in `<log_dir>/<name>.log`; print one line per finished run. Returns the run directories
    the commands printed, in `names`' order.

    Raises:
        CommandFailed: a command failed or printed no run directory (the others still ran).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    queue, running, run_dirs, failed = list(range(len(names))), {}, {}, []
    print(
        f"training {len(names)} runs, {jobs} at a time ({threads} thread(s) each); logs in {log_dir}/",
        flush=True,
    )
    try:
        while queue or running:
            while queue and len(running) < jobs:
                i = queue.pop(0)
                log = open(log_dir / f"{names[i]}.log", "w")  # noqa: SIM115 - closed when the run ends
                process = subprocess.Popen(commands[i], stdout=log, stderr=subprocess.STDOUT, env=env)
                running[process] = (i, log, time.monotonic())
            for process in [p for p in running if p.poll() is not None]:
                i, log, began = running.pop(process)
                log.close()
                run_dir = _run_dir_from_log(Path(log.name)) if process.returncode == 0 else None
                if run_dir is None:
                    failed.append(f"{names[i]} (exit {process.returncode}; see {log.name})")
                else:
                    run_dirs[i] = run_dir
                done = len(run_dirs) + len(failed)
                state = f"done in {time.monotonic() - began:.0f} s: {run_dir}" if run_dir else "FAILED"
                print(f"[{done}/{len(names)}] {names[i]} {state}", flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        _stop(list(running))
        raise
    if failed:
        raise CommandFailed(f"{len(failed)} of {len(names)} runs failed: {'; '.join(failed)}")
    return [run_dirs[i] for i in range(len(names))]


#: after Ctrl-C: seconds before a run still going gets SIGINT, then seconds more before SIGKILL
STOP_GRACE_S = (10.0, 60.0)


def _stop(processes: list[subprocess.Popen]) -> None:
    """After Ctrl-C: a terminal's Ctrl-C reached the runs too and each fit says what it kept; a run
    still going after 10 s (only this process was interrupted) gets SIGINT, and after 60 s more, SIGKILL."""

    def interrupt(process: subprocess.Popen) -> None:
        process.send_signal(signal.SIGINT)

    for grace, stop in zip(STOP_GRACE_S, (interrupt, subprocess.Popen.kill)):
        deadline = time.monotonic() + grace
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            time.sleep(0.2)
        for process in processes:
            if process.poll() is None:
                stop(process)
    for process in processes:
        process.wait()


def _run_dir_from_log(log: Path) -> Path | None:
    """The run directory a finished fit printed ("Run directory: ..."), or None."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith(RUN_DIRECTORY_LINE):
            return Path(line[len(RUN_DIRECTORY_LINE) :].strip())
    return None


def main(argv: Sequence[str] | None = None):
    """Train `--scale`, then write the report of its runs into `--out` (rank 0 only); returns the
    `alternet_pl.report.Report`, or None on other ranks and with `--print-commands`."""
    from alternet_pl import report

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    scales = ", ".join(available_scales())
    parser.add_argument("--scale", required=True, help=f"a scale of {SCALES_DIR}/ ({scales})")
    parser.add_argument("--data-dir", help="the runs' data folder (default $DATA_DIR, else data)")
    parser.add_argument(
        "--print-commands", action="store_true", help="print the fit commands of the scale and stop"
    )
    parser.add_argument(
        "--cluster", choices=("local", "slurm"), default="local",
        help="local: train here (--jobs at a time); slurm: submit a job array and a report job",
    )  # fmt: skip
    parser.add_argument(
        "--jobs", type=int, help="local: runs trained at once (default: the scale's `jobs`, else 1)"
    )
    parser.add_argument("--dry-run", action="store_true", help="with --cluster slurm: print the sbatch lines")
    parser.add_argument("--nodes", type=int, default=1, help="with --cluster slurm: nodes per run")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="with --cluster slurm: GPUs per node")
    parser.add_argument("--time-hours", type=float, default=48.0, help="with --cluster slurm: limit per run")
    report.add_render_arguments(parser)
    args = parser.parse_args(argv)
    scale = load_scale(args.scale)
    report.check_render_arguments(parser, args)  # before hours of training
    if args.print_commands:
        for fit_args in scale.fit_arguments(args.data_dir):
            print(shlex.join(["python", "-m", "alternet_pl.fit", *fit_args]))
        return None
    if args.cluster == "slurm":
        from alternet_pl import slurm

        allocation = slurm.Allocation(args.nodes, args.gpus_per_node, args.time_hours)
        fit_arguments = scale.fit_arguments(args.data_dir, slurm=True)
        slurm.submit_runs(fit_arguments, str(args.out), allocation, dry_run=args.dry_run)
        return None
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: use a whole number >= 1")
    runs = train_scale(scale, args.data_dir, args.jobs, Path(args.out) / "logs")
    if global_rank_from_env() != 0:  # under SLURM every task trained; rank 0 draws
        return None
    return report.render(runs, args)


if __name__ == "__main__":
    run_command(main, sys.argv[1:])
