"""The ranks of a multi-device `analyze`: one process per device (Lightning's launcher, torchrun, srun).

`analyze --devices N [--num_nodes M]` (or `torchrun --nproc_per_node N -m alternet_pl.analyze ...`, or
`srun` with one task per device) runs every analysis on N x M ranks over one process group (gloo on
CPUs, NCCL on GPUs, set up by Lightning Fabric's DDP strategy). The analyses split their own work
over the ranks (Hessian batches, landscape cells, feature batches; `alternet_pl.analysis.dist`) and
reduce it, so every rank holds the record one process would compute, and rank 0 writes it.
One device and no launcher: no process group, nothing changes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from alternet_pl.errors import InputError

__all__ = [
    "RankPlan",
    "add_rank_arguments",
    "Ranks",
    "end_ranks",
    "launcher_layout",
    "plan_ranks",
    "share_rank_zero_state",
    "on_ranks",
]


@dataclass(frozen=True)
class RankPlan:
    """What `start_ranks` starts: devices (processes) per node, nodes, and the accelerator."""

    devices: int
    num_nodes: int
    accelerator: str  # "cpu" or "cuda"

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


@dataclass(frozen=True)
class Ranks:
    """This process's place: its global rank, the number of ranks, and the device it computes on."""

    rank: int
    world_size: int
    device: torch.device


def add_rank_arguments(parser: Any) -> None:
    """`--devices` and `--num_nodes` on a jsonargparse parser (unset: 1, or what the launcher started)."""
    parser.add_argument(
        "--devices",
        type=int | None,
        default=None,
        help="ranks (one per device) per node; default 1, or the launcher's",
    )
    parser.add_argument(
        "--num_nodes",
        type=int | None,
        default=None,
        help="nodes, each started by srun or torchrun; default 1",
    )


def launcher_layout() -> tuple[int, int] | None:
    """(processes per node, nodes) when torchrun or srun started this process as one of several, else
    None (a plain `python -m`, or a SLURM job running one task)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        per_node = int(os.environ["LOCAL_WORLD_SIZE"])
        return per_node, max(1, int(os.environ["WORLD_SIZE"]) // per_node)
    if SLURMEnvironment.detect() and int(os.environ["SLURM_NTASKS"]) > 1:
        nodes = int(os.environ.get("SLURM_NNODES", "1"))
        per_node = os.environ.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
        return (int(per_node) if per_node.isdigit() else int(os.environ["SLURM_NTASKS"]) // nodes), nodes
    return None


def plan_ranks(devices: int | None, num_nodes: int | None, device: str) -> RankPlan:
    """Check `--devices` / `--num_nodes` against `--device` and the launcher, before anything starts.

    Unset, they follow the launcher (torchrun's `--nproc_per_node` / `--nnodes`, srun's tasks), else 1.
    Raises `InputError` (one line): a count below 1, one GPU named with several devices, more GPUs than
    the machine has, several nodes without a launcher that starts them, or counts that contradict it.
    """
    layout = launcher_layout()
    devices = devices if devices is not None else (layout[0] if layout else 1)
    num_nodes = num_nodes if num_nodes is not None else (layout[1] if layout else 1)
    if devices < 1 or num_nodes < 1:
        raise InputError(f"--devices {devices} --num_nodes {num_nodes}: both must be 1 or more")
    plan = RankPlan(devices, num_nodes, "cuda" if device.startswith("cuda") else "cpu")
    if plan.world_size > 1 and device not in ("cpu", "cuda"):
        raise InputError(f"--device {device} names one GPU; with --devices {devices} pass --device cuda")
    if plan.accelerator == "cuda" and devices > torch.cuda.device_count():
        raise InputError(
            f"--devices {devices}: this machine has {torch.cuda.device_count()} GPU(s); pass at most that"
        )
    if layout is None and num_nodes > 1:
        raise InputError(
            f"--num_nodes {num_nodes}: start the command on every node with srun or torchrun "
            "(README: Multi-GPU and SLURM), or drop --num_nodes"
        )
    if layout is not None and layout != (devices, num_nodes):
        raise InputError(
            f"--devices {devices} --num_nodes {num_nodes} contradict the launcher's {layout[0]} process(es) "
            f"per node on {layout[1]} node(s); pass those, or leave both out"
        )
    return plan


@contextmanager
def on_ranks(plan: RankPlan, device: str, module: nn.Module) -> Iterator[Ranks]:
    """Join (or, with `--devices N` and no launcher, start: Lightning re-runs this command N - 1 times)
    the process group of `plan` (one rank in all: nothing starts), and put `module` on this rank's
    device, in eval mode, with rank 0's weights. Yields this process's `Ranks`; on leaving, waits
    for every rank and leaves the group (not after an error: the other ranks may be stuck in a
    collective, and this process's exit ends them)."""
    if plan.world_size == 1:
        ranks = Ranks(0, 1, torch.device(device))
    else:
        from lightning.fabric import Fabric

        fabric = Fabric(
            accelerator=plan.accelerator, devices=plan.devices, num_nodes=plan.num_nodes, strategy="ddp"
        )
        fabric.launch()
        ranks = Ranks(fabric.global_rank, fabric.world_size, fabric.device)
    module.to(ranks.device).eval()
    share_rank_zero_state(module)
    if ranks.rank != 0:  # every rank computes the same record: its warnings are rank 0's
        warnings.simplefilter("ignore")
    yield ranks
    if plan.world_size > 1:  # a process group this command did not start is left alone
        end_ranks()


def share_rank_zero_state(module: nn.Module) -> None:
    """Every rank takes rank 0's parameters and buffers (random weights, `--model` without
    `--weights`, are drawn independently by each process); a no-op on one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for tensor in module.state_dict(keep_vars=True).values():
        dist.broadcast(tensor.data, src=0)


def end_ranks() -> None:
    """Wait for every rank, then leave the process group (nothing to do on one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
