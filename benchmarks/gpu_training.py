"""The GPU benchmark's training, landscape and DDP rows.

Training: our Lightning step against a plain PyTorch bf16-autocast loop on the same model, data and
optimizer, each timed over `train_steps - warmup` steps with the clock (a CUDA synchronise) read only
at the two ends on both sides, in interleaved repetitions. DDP: a 2-device fit in a subprocess with
its own timeout (`python -m benchmarks.gpu_training --ddp ...`), skipped on a machine with one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpu_plan import tally
from benchmarks.table import Row, interleaved, ratios

__all__ = ["training_rows", "landscape_rows", "ddp_rows"]

ROOT = Path(__file__).resolve().parents[1]


def _img_s(batch: int, xs: list[float]) -> str:
    return f"{batch / statistics.median(xs):.0f} img/s"


def training_rows(s, device: str, clock: str, shared: dict) -> list[Row]:
    """Lightning bf16-mixed step / plain bf16 loop step; stores Lightning's median in `shared`."""
    from benchmarks.training_suite import _data, data_seconds_per_batch, lightning_steps, plain_steps

    tally("data", s.train_model)
    start = time.perf_counter()
    dm = _data(s.train_batch, s.train_steps, num_classes=s.num_classes, workers=s.workers)
    data_seconds = time.perf_counter() - start
    accel = "gpu" if device == "cuda" else "cpu"
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    for rep in range(s.train_repeats):
        for side in ("ours", "plain")[:: -1 if rep % 2 else 1]:
            tally("fit", s.train_model)
            tally("train_step", s.train_model, s.train_steps)
            if side == "ours":
                sec = lightning_steps(
                    s.train_model,
                    dm,
                    s.train_steps,
                    s.warmup,
                    clock,
                    accel,
                    "bf16-mixed",
                    num_classes=s.num_classes,
                )
            else:
                sec = plain_steps(
                    s.train_model,
                    dm,
                    s.train_steps,
                    s.warmup,
                    clock,
                    device,
                    bf16=True,
                    num_classes=s.num_classes,
                )
            times[side].append(sec)
    shared["lightning_step_s"] = statistics.median(times["ours"])
    timed = s.train_steps - s.warmup
    loader_batches = min(50, s.train_steps)
    tally("data_batch", s.train_model, loader_batches)
    loader = data_seconds_per_batch(dm, loader_batches, "wall")
    return [
        Row(
            "GPU training",
            f"{s.train_model} bf16-mixed, batch {s.train_batch}, {timed} timed steps: "
            "Lightning step / plain bf16 loop step",
            _img_s(s.train_batch, times["ours"]),
            f"plain {_img_s(s.train_batch, times['plain'])}",
            ratios(times["ours"], times["plain"]),
            goal=1.05,
            note="clock read (CUDA synchronised) only at the first timed step's start and the last step's "
            f"end; {s.workers} loader workers; the synthetic set took {data_seconds:.0f} s to make",
        ),
        Row(
            "GPU training",
            f"synthetic data loader ({s.workers} workers) / what {s.train_model} consumes (images/s)",
            f"{s.train_batch / loader:.0f} img/s",
            f"plain loop consumes {_img_s(s.train_batch, times['plain'])}",
            [p / loader for p in times["plain"]],
            goal=1.0,
            better="higher",
            note="below 1 the loader limits both sides and the row above understates Lightning's overhead",
        ),
    ]


def landscape_rows(s, device: str, clock: str) -> list[Row]:
    """Landscape grid time over its forward floor (the same forwards with nothing else)."""
    import timm

    import alternet_pl.models  # noqa: F401
    from alternet_pl.analysis.landscape import evaluate_grid, random_directions
    from alternet_pl.analysis.loss import cross_entropy_loss

    tally("build", s.grid_model)
    torch.manual_seed(0)
    model = timm.create_model(s.grid_model, num_classes=100).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(s.grid_batch, 3, 32, 32, generator=gen).to(device),
            torch.randint(0, 100, (s.grid_batch,), generator=gen).to(device),
        )
        for _ in range(2)
    ]
    dirs = random_directions(model, n=2, seed=0)
    axis = np.linspace(-1, 1, s.grid_steps)
    cells = s.grid_steps**2

    def floor() -> None:
        tally("forward", s.grid_model, cells * len(batches))
        with torch.inference_mode():
            for _ in range(cells):
                for xb, _ in batches:
                    model(xb)

    def grid() -> None:
        tally("forward", s.grid_model, cells * len(batches))
        evaluate_grid(model, cross_entropy_loss, batches, dirs, [axis, axis], progress=False)

    t = interleaved({"floor": floor, "grid": grid}, s.grid_repeats, clock)
    cps = lambda xs: f"{cells / statistics.median(xs):.1f} cells/s"  # noqa: E731
    return [
        Row(
            "GPU landscape",
            f"{s.grid_model} {s.grid_steps}x{s.grid_steps} grid, 2x{s.grid_batch} images: "
            "grid time / forward floor",
            cps(t["grid"]),
            f"floor {cps(t['floor'])}",
            ratios(t["grid"], t["floor"]),
            goal=1.1,
        )
    ]


def ddp_rows(s, device: str, clock: str, shared: dict) -> list[Row]:
    """A 2-device DDP fit's step time over the single-device Lightning step (same per-device batch),
    in a subprocess with its own timeout; one line saying why when it cannot run."""
    figure = f"{s.train_model} DDP, 2 devices, batch {s.train_batch} each: step / single-device step"
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    if device == "cuda" and gpus < 2:
        return [Row("GPU DDP", figure, "skipped", "-", note=f"skipped: {gpus} GPU visible, DDP needs 2")]
    tally("ddp", s.train_model)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.gpu_training",
            "--ddp",
            "--out",
            str(out),
            "--model",
            s.train_model,
            "--classes",
            str(s.num_classes),
            "--batch",
            str(s.train_batch),
            "--steps",
            str(s.train_steps),
            "--warmup",
            str(s.warmup),
            "--clock",
            clock,
            "--accelerator",
            "gpu" if device == "cuda" else "cpu",
        ]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=s.ddp_timeout
            )
        except subprocess.TimeoutExpired:
            return [Row("GPU DDP", figure, "failed", "-", missed=f"timed out after {s.ddp_timeout} s")]
        if proc.returncode or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return [Row("GPU DDP", figure, "failed", "-", missed=f"exit {proc.returncode}: {tail[0][:150]}")]
        ddp = json.loads(out.read_text())["seconds_per_step"]
    single = shared.get("lightning_step_s")
    if single is None:
        return [Row("GPU DDP", figure, _img_s(2 * s.train_batch, [ddp]), "no single-device figure")]
    return [
        Row(
            "GPU DDP",
            figure,
            _img_s(2 * s.train_batch, [ddp]),
            f"single {_img_s(s.train_batch, [single])}",
            [ddp / single],
            note="one DDP run (a subprocess) against the training section's median",
        )
    ]


def _ddp_child(argv: list[str]) -> None:
    """Rank 0 writes {"seconds_per_step": ...} to --out (Lightning launches rank 1 by re-running this)."""
    from benchmarks.training_suite import _data, lightning_steps

    ap = argparse.ArgumentParser()
    ap.add_argument("--ddp", action="store_true")
    for name, kind in (
        ("out", Path),
        ("model", str),
        ("classes", int),
        ("batch", int),
        ("steps", int),
        ("warmup", int),
        ("clock", str),
        ("accelerator", str),
    ):
        ap.add_argument(f"--{name}", type=kind, required=True)
    a = ap.parse_args(argv)
    if a.accelerator == "cpu":
        torch.set_num_threads(1)
    dm = _data(a.batch, 2 * a.steps, num_classes=a.classes)  # each of the 2 ranks reads half
    sec = lightning_steps(
        a.model,
        dm,
        a.steps,
        a.warmup,
        a.clock,
        a.accelerator,
        "bf16-mixed",
        "ddp",
        num_classes=a.classes,
        devices=2,
    )
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        a.out.write_text(json.dumps({"seconds_per_step": sec}))


if __name__ == "__main__":
    _ddp_child(sys.argv[1:])
