"""`restore_state`: the one place that makes an analysis leave training untouched; the one save and
restore of train/eval flags (`training_flags`, `eval_mode`); RNG and batch helpers."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["eval_mode", "map_tensors", "restore_state", "seeded", "to_device", "training_flags"]


def _rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python, NumPy and torch for a block of code, then put their previous states back."""
    saved = _rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        _set_rng_state(saved)


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply `fn` to every tensor of a (nested tuple / list / dict) batch, keeping its structure."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, list | tuple):
        return type(batch)(map_tensors(b, fn) for b in batch)
    if isinstance(batch, dict):
        return {k: map_tensors(v, fn) for k, v in batch.items()}
    return batch


def to_device(batch: Any, device: torch.device) -> Any:
    """The batch with every tensor moved to `device` (structure kept)."""
    return map_tensors(batch, lambda t: t.to(device))


@contextmanager
def training_flags(model: nn.Module) -> Iterator[nn.Module]:
    """Save every module's train/eval flag and put it back on exit, whatever the block changes."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every module in eval mode (no BN statistic updates, no dropout); the flags restored after."""
    with training_flags(model):
        model.eval()
        yield model


@contextmanager
def restore_state(
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer] | torch.optim.Optimizer | None = None,
    rng: bool = True,
) -> Iterator[nn.Module]:
    """Snapshot everything an analysis could disturb and put it back bit-identically on exit.

    Covers parameter values, buffers (BN running statistics, ``num_batches_tracked``), every
    module's train/eval flag, each parameter's ``requires_grad`` and ``.grad``, the Python /
    NumPy / torch (and CUDA) RNG states and, when given, optimizer state. Values are copied back
    in place, so parameter identity (and the optimizer's references to them) is preserved.
    """
    if isinstance(optimizers, torch.optim.Optimizer):
        optimizers = [optimizers]
    optimizers = list(optimizers or [])
    params = dict(model.named_parameters(remove_duplicate=False))
    saved_params = {n: p.detach().clone() for n, p in params.items()}
    saved_requires_grad = {n: p.requires_grad for n, p in params.items()}
    saved_grads = {n: (None if p.grad is None else p.grad.detach().clone()) for n, p in params.items()}
    buffers = dict(model.named_buffers(remove_duplicate=False))
    saved_buffers = {n: b.detach().clone() for n, b in buffers.items()}
    saved_optim = [copy.deepcopy(opt.state_dict()) for opt in optimizers]
    saved_rng = _rng_state() if rng else None
    try:
        with training_flags(model):
            yield model
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved_params[n])
                p.requires_grad_(saved_requires_grad[n])
                p.grad = saved_grads[n]
            for n, b in buffers.items():
                b.copy_(saved_buffers[n])
        for opt, state in zip(optimizers, saved_optim):
            opt.load_state_dict(state)
        if saved_rng is not None:
            _set_rng_state(saved_rng)
