"""Tiny torch.distributed helpers so analyses run alike on one process and under DDP."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from alternet_pl.errors import InputError

__all__ = [
    "all_gather_objects",
    "all_reduce_sum",
    "broadcast_object",
    "broadcast_tensor",
    "check_same_batches",
    "is_distributed",
    "rank_and_world",
]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (no-op on one process). Returns it."""
    if is_distributed() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank, in rank order (a one-element list on one process)."""
    if not is_distributed() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_distributed() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_tensor(
    tensor: torch.Tensor | None,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    src: int = 0,
) -> torch.Tensor:
    """`tensor` from rank `src` on every rank (others pass None); `device` must suit the backend."""
    if not is_distributed() or dist.get_world_size() == 1:
        return tensor
    if dist.get_rank() == src:
        buf = tensor.to(device=device, dtype=dtype).contiguous()
    else:
        buf = torch.empty(shape, dtype=dtype, device=device)
    dist.broadcast(buf, src=src)
    return buf


def _fingerprint(batches: list) -> tuple:
    """A cheap identity of a batch list: its length, sample count and the sum of its first tensor."""

    def first(b: Any) -> torch.Tensor | None:
        if isinstance(b, torch.Tensor):
            return b
        if isinstance(b, list | tuple) and b:
            return first(b[0])
        return None

    sizes = [int(t.shape[0]) if (t := first(b)) is not None and t.ndim else 1 for b in batches]
    head = first(batches[0]) if batches else None
    total = float(head.detach().double().sum()) if head is not None else 0.0
    return len(batches), sum(sizes), round(total, 6)


def check_same_batches(batches: list, what: str) -> None:
    """Under DDP, raise unless every rank holds the same batch list (functions that split the work
    themselves need the full list everywhere, not a per-rank shard from a DistributedSampler)."""
    if not is_distributed() or dist.get_world_size() == 1:
        return
    prints = all_gather_objects(_fingerprint(batches))
    if any(p != prints[0] for p in prints[1:]):
        raise InputError(
            f"{what}: the ranks hold different batches ({prints}); pass the same full list of batches on "
            "every rank (it splits the work itself), not a per-rank shard"
        )
