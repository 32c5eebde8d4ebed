"""A scale's runs on SLURM: one job array (a task per run, requeue-safe) and a report job that waits for it.

`python -m alternet_pl.reproduce --scale paper --cluster slurm` (`make reproduce-figures SCALE=paper
CLUSTER=slurm`) writes the runs' `fit` arguments to `<out>/slurm/commands.txt`, submits
`scripts/slurm/array.sbatch` as an array over its lines and `scripts/slurm/report.sbatch` with
`--dependency=afterok:<array>`, and prints both job ids and the GPU hours asked for. `--dry-run` prints
the `sbatch` lines instead of submitting. Nodes, GPUs per node and the time limit come from the command.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from alternet_pl.errors import CommandFailed, InputError

__all__ = ["ARRAY_SCRIPT", "REPORT_SCRIPT", "Allocation", "gpu_hours", "sbatch_lines", "submit_runs"]

ARRAY_SCRIPT = "scripts/slurm/array.sbatch"
REPORT_SCRIPT = "scripts/slurm/report.sbatch"
ARRAY_ID = "@ARRAY_ID@"  # the array's job id, once known


@dataclass(frozen=True)
class Allocation:
    """What each array task asks for: nodes, GPUs per node (one task per GPU), the time limit (hours)."""

    nodes: int = 1
    gpus_per_node: int = 8
    hours: float = 48.0

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1 or not self.hours > 0:
            raise InputError(
                f"nodes={self.nodes}, gpus_per_node={self.gpus_per_node}, hours={self.hours}: each must be "
                "positive (NODES=1 GPUS_PER_NODE=8 TIME_HOURS=48)"
            )

    def sbatch_options(self) -> list[str]:
        minutes = int(round(self.hours * 60))
        return [
            f"--nodes={self.nodes}",
            f"--ntasks-per-node={self.gpus_per_node}",
            f"--gpus-per-node={self.gpus_per_node}",
            f"--time={minutes // 60}:{minutes % 60:02d}:00",
        ]


def gpu_hours(num_runs: int, allocation: Allocation) -> float:
    """GPU hours the array asks for at most: runs x nodes x GPUs per node x the time limit."""
    return num_runs * allocation.nodes * allocation.gpus_per_node * allocation.hours


def sbatch_lines(
    commands: Path, num_runs: int, allocation: Allocation, out: str
) -> tuple[list[str], list[str]]:
    """(the array's sbatch command, the report's; its dependency names `ARRAY_ID` until submitted)."""
    array = [
        "sbatch", "--parsable", f"--array=0-{num_runs - 1}", *allocation.sbatch_options(),
        "--requeue", "--signal=USR1@120", ARRAY_SCRIPT, str(commands),
    ]  # fmt: skip
    report = ["sbatch", "--parsable", f"--dependency=afterok:{ARRAY_ID}", REPORT_SCRIPT, ARRAY_ID, out]
    return array, report


def _submit(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise InputError(
            "sbatch not found: run on a SLURM login node (or DRY_RUN=1 to see the commands)"
        ) from None
    if done.returncode != 0:
        raise CommandFailed(f"sbatch failed ({done.returncode}): {done.stderr.strip()[:300]}")
    return done.stdout.strip().split(";")[0]  # --parsable: "<id>[;<cluster>]"


def submit_runs(
    fit_arguments: list[list[str]], out: str, allocation: Allocation, dry_run: bool = False
) -> tuple[str, str] | None:
    """Write the commands file, submit the array and the report job (or print them); return the job ids.

    Each run resumes with `--ckpt_path last` in `runs/<experiment>/job_<array>_<task>/` (array.sbatch).
    """
    if not fit_arguments:
        raise InputError("the scale has no runs to submit")
    commands = Path(out) / "slurm" / "commands.txt"
    commands.parent.mkdir(parents=True, exist_ok=True)
    commands.write_text("".join(shlex.join(args) + "\n" for args in fit_arguments))
    array, report = sbatch_lines(commands, len(fit_arguments), allocation, out)
    hours = gpu_hours(len(fit_arguments), allocation)
    print(
        f"{len(fit_arguments)} runs as one job array, each {allocation.nodes} node(s) x "
        f"{allocation.gpus_per_node} GPU(s) for at most {allocation.hours:g} h: up to {hours:g} GPU hours "
        f"(the time limit; a requeued task adds its next allocation); commands in {commands}",
        flush=True,
    )
    if dry_run:  # a shell script: the report line takes the array's id from the first
        print(f"ARRAY_ID=$({shlex.join(array)})")
        print(" ".join(shlex.quote(a).replace(ARRAY_ID, '"$ARRAY_ID"') for a in report))
        return None
    array_id = _submit(array)
    report_id = _submit([a.replace(ARRAY_ID, array_id) for a in report])
    print(
        f"submitted job array {array_id} ({len(fit_arguments)} runs) and report job {report_id} "
        f"(after {array_id})"
    )
    return array_id, report_id
