"""Loss-landscape speed: a steps x steps grid vs the same number of plain forward passes, and vs the
`loss-landscapes` package's `random_plane` on a model without BatchNorm, measured side by side.

    python benchmarks/bench_landscape.py [--steps 21] [--batch-size 16] [--num-batches 2] [--reps 2]

Target: grid / forward passes <= 1.1 (the forward passes are the physical floor of a grid).
`loss-landscapes` is a bench-only extra (`pip install loss-landscapes`); it takes a single batch, so
both sides get the same single batch of num_batches * batch_size images there.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

import alternet_pl.models  # noqa: F401  (registers the timm models)
from alternet_pl.analysis.landscape import evaluate_grid, random_directions
from alternet_pl.analysis.loss import cross_entropy_loss


class Timer:
    """Wall and process-CPU seconds. On a shared machine with one torch thread, CPU time is the
    stable measure (other processes' load inflates wall time, not our CPU time)."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def forward_passes(model: torch.nn.Module, batches: list, cells: int) -> Timer:
    """`cells` rounds of plain eval-mode forward passes over the batches: the floor of a grid."""
    model.eval()
    with Timer() as t, torch.inference_mode():
        for _ in range(cells):
            for x, _y in batches:
                model(x)
    return t


def grid(model: torch.nn.Module, batches: list, steps: int) -> Timer:
    """The whole `evaluate_grid` call, directions included."""
    with Timer() as t:
        dirs = random_directions(model, n=2, seed=0)
        axis = np.linspace(-1, 1, steps)
        evaluate_grid(model, cross_entropy_loss, batches, dirs, [axis, axis], progress=False)
    return t


def machinery(model: torch.nn.Module, batches: list, steps: int) -> Timer:
    """`evaluate_grid` with a loss_fn that runs no forward pass: the grid's own cost (weight updates,
    bookkeeping, restore), which noise on a shared machine cannot hide."""

    def no_forward(m: torch.nn.Module, batch: tuple) -> tuple[torch.Tensor, int, torch.Tensor]:
        return torch.zeros(()), len(batch[1]), torch.zeros(())

    with Timer() as t:
        dirs = random_directions(model, n=2, seed=0)
        axis = np.linspace(-1, 1, steps)
        evaluate_grid(model, no_forward, batches, dirs, [axis, axis], progress=False)
    return t


def interleaved_rows(model: torch.nn.Module, batches: list, steps: int, reps: int) -> tuple[float, float]:
    """CPU seconds of (forward passes, grid) measured row by row, alternating: each grid row (one
    `evaluate_grid` call on a 1 x steps slice, so its setup is paid `steps` times: an upper bound)
    runs right beside `steps` rounds of forward passes, so both see the same load from other jobs."""
    dirs = random_directions(model, n=2, seed=0)
    axis = np.linspace(-1, 1, steps)
    floor = ours = 0.0
    for rep in range(reps):
        for i, a in enumerate(axis):
            for first in (0, 1) if (i + rep) % 2 else (1, 0):
                if first:
                    floor += forward_passes(model, batches, steps).cpu
                else:
                    with Timer() as t:
                        evaluate_grid(model, cross_entropy_loss, batches, dirs, [[a], axis], progress=False)
                    ours += t.cpu
    return floor, ours


def peer_random_plane(model: torch.nn.Module, batch: tuple, steps: int) -> Timer | str:
    try:
        import loss_landscapes
        import loss_landscapes.metrics
    except ImportError as err:
        return f"not installed ({err}); pip install loss-landscapes"
    metric = loss_landscapes.metrics.Loss(F.cross_entropy, batch[0], batch[1])
    model = copy.deepcopy(
        model
    ).eval()  # random_plane sets requires_grad=False on the model it gets, for good
    try:
        with Timer() as t, torch.no_grad():  # generous: the package itself builds autograd graphs
            loss_landscapes.random_plane(model, metric, distance=1, steps=steps, normalization="filter")
    except Exception as err:  # noqa: BLE001
        return f"random_plane failed: {type(err).__name__}: {err}"
    return t


class PlainCNN(torch.nn.Module):
    """A small CNN without BatchNorm (loss-landscapes' filter normalisation needs no zero filters)."""

    def __init__(self) -> None:
        super().__init__()
        c = torch.nn.Conv2d
        self.body = torch.nn.Sequential(
            c(3, 32, 3, padding=1),
            torch.nn.ReLU(),
            c(32, 64, 3, 2, 1),
            torch.nn.ReLU(),
            c(64, 128, 3, 2, 1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


def best(timers: list[Timer]) -> tuple[float, float]:
    return min(t.wall for t in timers), min(t.cpu for t in timers)


def paired(ours: list[Timer], base: list[Timer]) -> str:
    """Median over reps of the per-rep CPU-time ratio (each pair ran back to back)."""
    return f"{np.median([a.cpu / b.cpu for a, b in zip(ours, base)]):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="alternet_cifar_micro")
    ap.add_argument("--steps", type=int, default=21)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-batches", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=("all", "main", "peer"), default="all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cells = args.steps**2
    batches = [
        (torch.randn(args.batch_size, 3, 32, 32), torch.randint(0, 10, (args.batch_size,)))
        for _ in range(args.num_batches)
    ]

    if args.only != "peer":
        run_main(args, batches, cells)
    if args.only != "main":
        run_peer(args, batches, cells)


def run_main(args: argparse.Namespace, batches: list, cells: int) -> None:
    model = timm.create_model(args.model, num_classes=10)
    forward_passes(model, batches, 2)  # warm-up
    floor, ours = [], []
    for rep in range(args.reps):  # interleaved, order alternating, best of reps: the machine may be shared
        if rep % 2:
            ours.append(grid(model, batches, args.steps))
        floor.append(forward_passes(model, batches, cells))
        if not rep % 2:
            ours.append(grid(model, batches, args.steps))
    (fw, fc), (ow, oc) = best(floor), best(ours)
    print(
        f"{args.model}: {args.steps}x{args.steps} grid, {args.num_batches} x {args.batch_size} images, "
        f"{args.threads} thread(s); best of {args.reps}, wall s / cpu s"
    )
    print(f"  {cells} x plain forward passes : {fw:7.2f} / {fc:7.2f}")
    print(f"  evaluate_grid                 : {ow:7.2f} / {oc:7.2f}")
    print(f"  ratio grid / forward passes   : {ow / fw:7.3f} / {oc / fc:7.3f}   (target <= 1.1)")
    print(f"  paired median cpu ratio       : {paired(ours, floor)}")
    fr, gr = interleaved_rows(model, batches, args.steps, args.reps)
    print(
        f"  row-interleaved, summed over {args.reps} reps: forward {fr:.2f} cpu s, grid {gr:.2f} cpu s, "
        f"ratio {gr / fr:.3f}   (target <= 1.1; the robust number on a shared machine)"
    )
    over = min(machinery(model, batches, args.steps).cpu for _ in range(args.reps))
    print(f"  grid machinery alone (no forward): {over:.3f} cpu s = {100 * over / fc:.2f}% of the forwards")


def run_peer(args: argparse.Namespace, batches: list, cells: int) -> None:
    single = (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    vit = timm.create_model("vit_cifar_micro", num_classes=10)
    print(f"loss-landscapes on vit_cifar_micro (LayerNorm, no BN): {peer_random_plane(vit, single, 3)}")
    peer = PlainCNN()
    theirs, ours_peer, floor_peer = [], [], []
    forward_passes(peer, [single], 2)  # warm-up
    for rep in range(args.reps):  # the three side by side, order reversed every other rep
        for job in ("floor", "ours", "theirs")[:: -1 if rep % 2 else 1]:
            if job == "floor":
                floor_peer.append(forward_passes(peer, [single], cells))
            elif job == "ours":
                ours_peer.append(grid(peer, [single], args.steps))
            else:
                t = peer_random_plane(peer, single, args.steps)
                if isinstance(t, str):
                    print(f"  loss-landscapes: {t}")
                    return
                theirs.append(t)
    (fw, fc), (ow, oc), (tw, tc) = best(floor_peer), best(ours_peer), best(theirs)
    print(f"PlainCNN (no BatchNorm), {args.steps}x{args.steps} grid, one batch of {len(single[1])} images:")
    print(f"  {cells} x plain forward passes : {fw:7.2f} / {fc:7.2f}")
    print(f"  evaluate_grid                 : {ow:7.2f} / {oc:7.2f}")
    print(f"  loss_landscapes.random_plane  : {tw:7.2f} / {tc:7.2f}")
    print(f"  ratio ours / random_plane     : {ow / tw:7.3f} / {oc / tc:7.3f}   (target <= 1.0)")
    print(f"  ratio ours / forward passes   : {ow / fw:7.3f} / {oc / fc:7.3f}")
    print(f"  paired median cpu ratio, ours / random_plane: {paired(ours_peer, theirs)}")


if __name__ == "__main__":
    main()
