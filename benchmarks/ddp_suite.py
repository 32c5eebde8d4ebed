"""DDP rows: the landscape grid and the corruption evaluation on 2 CPU ranks (gloo) over 1 rank.

Both analyses split their work by rank (grid cells round-robin, corruption subsets by index) and
gather the results. Each world size runs in its own spawned group with one torch thread per rank;
every repetition is timed in wall seconds between two barriers on rank 0 (process start-up and
imports excluded). With fewer free cores than ranks the ratio says so (see the load in the header).
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.table import Row, ratios

SECTION = "DDP"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out_dir: str, cfg: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        import timm

        import alternet_pl.models  # noqa: F401
        from alternet_pl.analysis.landscape import evaluate_grid, random_directions
        from alternet_pl.analysis.loss import cross_entropy_loss
        from alternet_pl.analysis.robustness import evaluate_subsets

        torch.manual_seed(0)
        model = timm.create_model(cfg["model"], num_classes=10).eval()
        gen = torch.Generator().manual_seed(0)
        bs = cfg["batch_size"]
        batches = [
            (torch.randn(bs, 3, 32, 32, generator=gen), torch.randint(0, 10, (bs,), generator=gen))
            for _ in range(cfg["num_batches"])
        ]
        subsets = {f"corruption{c}-s{s}": batches for c in range(cfg["corruptions"]) for s in (1, 3)}
        dirs = random_directions(model, n=2, seed=0)
        axis = np.linspace(-1, 1, cfg["steps"])
        times: dict[str, list[float]] = {"grid": [], "corruption": []}
        for _ in range(cfg["repeats"]):
            for key in times:
                dist.barrier()
                start = time.perf_counter()
                if key == "grid":
                    evaluate_grid(model, cross_entropy_loss, batches, dirs, [axis, axis], progress=False)
                else:
                    evaluate_subsets(model, subsets)
                dist.barrier()
                times[key].append(time.perf_counter() - start)
        if rank == 0:
            with open(os.path.join(out_dir, "times.pkl"), "wb") as fh:
                pickle.dump(times, fh)
    finally:
        dist.destroy_process_group()


def timed_world(world: int, cfg: dict) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_rank_main, args=(world, _free_port(), out, cfg), nprocs=world, join=True)
        with open(os.path.join(out, "times.pkl"), "rb") as fh:
            return pickle.load(fh)


def ddp_rows(
    model: str, steps: int, batch_size: int, num_batches: int, corruptions: int, repeats: int, log
) -> list[Row]:
    cfg = dict(
        model=model,
        steps=steps,
        batch_size=batch_size,
        num_batches=num_batches,
        corruptions=corruptions,
        repeats=repeats,
    )
    one, two = timed_world(1, cfg), timed_world(2, cfg)
    sec = lambda xs: f"{sorted(xs)[len(xs) // 2]:.2f} s"  # noqa: E731
    rows = [
        Row(
            SECTION,
            f"{model} {steps}x{steps} landscape grid, 2 ranks / 1 rank",
            sec(two["grid"]),
            f"1 rank {sec(one['grid'])}",
            ratios(two["grid"], one["grid"]),
            goal=0.6,
        ),
        Row(
            SECTION,
            f"corruption evaluation ({2 * corruptions} subsets x {num_batches}x{batch_size} images), "
            "2 ranks / 1 rank",
            sec(two["corruption"]),
            f"1 rank {sec(one['corruption'])}",
            ratios(two["corruption"], one["corruption"]),
            goal=0.6,
            note=f"gloo on CPU, one thread per rank, {os.cpu_count()} logical cores shared with other jobs",
        ),
    ]
    log(
        f"  ddp: grid {sec(one['grid'])} -> {sec(two['grid'])}, corruption {sec(one['corruption'])} -> "
        f"{sec(two['corruption'])}"
    )
    return rows
