"""The benchmark: one markdown table of side-by-side ratios, written to benchmarks/results/.

    python -m benchmarks.run [--quick] [--only hessian landscape ...]     (`make bench [QUICK=1]`)

`--quick` leaves out the quickstart suite (minutes of CPU by itself) unless named in `--only`.

Suites: hessian (HVP counts vs PyHessian and hessian-eigenthings against a dense reference; product
cost and memory vs a gradient), landscape (grid vs its forward floor and vs loss-landscapes), training
(Lightning vs a plain loop; data throughput), ddp (2 CPU ranks vs 1), quickstart (wall time). The
peers are in the `bench` extra (`pip install -e '.[bench]'`). Timings in process CPU seconds with one
torch thread unless said otherwise: the machine may be shared, and CPU time is what load inflates least.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.table import Row, machine_description, render, write_results

ROOT = Path(__file__).resolve().parents[1]
SUITES = ("hessian", "landscape", "training", "ddp", "quickstart")

# (full, quick) settings per suite
SETTINGS = {
    "seeds": (5, 3),
    "repeats": (7, 3),
    "cost_batch": (64, 64),
    "lanczos_steps": (20, 10),
    "memory_batch": (128, 128),
    "memory_repeats": (3, 1),
    "grid_steps": (21, 21),
    "grid_batch": (32, 16),
    "grid_batches": (2, 1),
    "train_batch": (64, 32),
    "train_steps": (30, 12),
    "ddp_steps": (21, 11),
    "ddp_repeats": (3, 2),
    "ddp_corruptions": (15, 6),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def quickstart_rows() -> list[Row]:
    """The README's quickstart command after install: wall seconds and the child's CPU seconds."""
    cmd = [
        sys.executable,
        "-m",
        "alternet_pl.fit",
        "--config",
        str(ROOT / "experiments/quickstart.yaml"),
        "--config",
        str(ROOT / "configs/analysis/light.yaml"),
    ]
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as cwd:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return [Row("Quickstart", "make quickstart wall time", "failed", "-", missed=tail[0][:120])]
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return [
        Row(
            "Quickstart",
            "make quickstart (3 epochs + light analyses), after install",
            f"{wall:.0f} s wall",
            f"{cpu:.0f} s CPU",
            note="absolute seconds, no ratio: wall time grows with the machine's load, CPU time much less",
        )
    ]


def main(argv: list[str] | None = None) -> Path | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer seeds and repetitions; < 10 min on 2 cores")
    ap.add_argument(
        "--only",
        nargs="+",
        choices=SUITES,
        default=None,
        help="suites to run (default: all; with --quick all but the quickstart, itself minutes of CPU)",
    )
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args(argv)
    if args.only is None:
        args.only = [x for x in SUITES if not (args.quick and x == "quickstart")]
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_MODE", "disabled")
    s = {k: v[1] if args.quick else v[0] for k, v in SETTINGS.items()}
    rows: list[Row] = []
    machine = machine_description()
    t0 = time.perf_counter()
    if "hessian" in args.only:
        from benchmarks import hessian_suite as hs

        log("[hessian] HVP counts to 1e-3 against a dense float64 reference")
        rows += hs.eigen_rows(list(range(s["seeds"])), log)
        log("[hessian] product cost vs gradient")
        models = ["vit_cifar_micro", "alternet_cifar_micro"]
        rows += hs.cost_rows(models, s["cost_batch"], s["repeats"], s["lanczos_steps"], log)
        log("[hessian] peak memory vs gradient")
        rows += hs.memory_rows(models, s["memory_batch"], s["memory_repeats"], log)
    if "landscape" in args.only:
        from benchmarks.landscape_suite import landscape_rows

        log("[landscape]")
        rows += landscape_rows(
            "alternet_cifar_micro", s["grid_steps"], s["grid_batch"], s["grid_batches"], s["repeats"], log
        )
    if "training" in args.only:
        from benchmarks.training_suite import training_rows

        log("[training]")
        rows += training_rows(
            "alternet_cifar_micro", s["train_batch"], s["train_steps"], 3, s["repeats"], log
        )
    if "ddp" in args.only:
        from benchmarks.ddp_suite import ddp_rows

        log("[ddp]")
        rows += ddp_rows(
            "alternet_cifar_micro", s["ddp_steps"], 16, 2, s["ddp_corruptions"], s["ddp_repeats"], log
        )
    if "quickstart" in args.only:
        log("[quickstart]")
        rows += quickstart_rows()
    settings = (
        f"Mode: {'QUICK' if args.quick else 'full'} ({', '.join(f'{k}={v}' for k, v in s.items())}); "
        f"suites: {', '.join(args.only)}; took {time.perf_counter() - t0:.0f} s. Ratios are ours / baseline "
        "per repetition, interleaved; CPU timings in process CPU seconds, one torch thread."
    )
    text = render(rows, "alternet-pl benchmark", settings, machine)
    print(text)
    if args.no_write:
        return None
    path = write_results(text, args.out) if args.out else write_results(text)
    log(f"written to {path}")
    return path


if __name__ == "__main__":
    main()
