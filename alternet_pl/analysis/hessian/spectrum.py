"""The paper's "Hessian max eigenvalue spectrum": the top eigenvalues of each mini-batch's Hessian."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from alternet_pl.analysis.dist import all_gather_objects, check_same_batches, rank_and_world
from alternet_pl.analysis.hessian.eigen import Which
from alternet_pl.analysis.hessian.lanczos import top_eigenvalues
from alternet_pl.analysis.hessian.operator import BatchNormMode, HessianOperator
from alternet_pl.analysis.params import ParamSelection
from alternet_pl.analysis.progress import progress
from alternet_pl.errors import InputError

__all__ = ["SpectrumResult", "max_eigenvalue_spectrum"]


@dataclass(frozen=True, eq=False)
class SpectrumResult:
    """Per mini-batch: its k eigenvalues (ascending), their residuals and whether the batch converged."""

    eigenvalues: torch.Tensor  # (num_batches, k) float64
    residuals: torch.Tensor  # (num_batches, k) float64: ||H x - theta x|| of each value
    converged: torch.Tensor  # (num_batches,) bool
    which: str

    @property
    def unconverged_batches(self) -> list[int]:
        """Indices of the batches whose eigenvalues did not meet the tolerance within max_iter."""
        return (~self.converged).nonzero().flatten().tolist()


def max_eigenvalue_spectrum(
    model: nn.Module,
    loss_fn: Callable,
    batches: Iterable,
    k: int = 1,
    which: Which = "LA",
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    shard: bool = True,
    params: ParamSelection = None,
    dtype: torch.dtype | None = None,
    mode: BatchNormMode = "eval",
    cache_graph: bool = False,
) -> SpectrumResult:
    """Top-k eigenvalues of each mini-batch's Hessian (Lanczos, `top_eigenvalues` with seed + index).

    The paper's spectrum is k=5, which="LM" on augmented training batches, with the weight-decay
    term (pass ``WeightDecayLoss(loss_fn, wd, "norm")``). `params`, `dtype`, `mode`, `cache_graph`
    configure each batch's `HessianOperator`. Under torch.distributed with `shard`, rank r handles
    batches[r::world] and the rows are gathered, so every rank returns the same result (every rank
    must pass the same full list). Unconverged batches are flagged in the result, not warned about
    one by one. Raises ValueError for an empty batch list or ranks holding different batches.
    """
    batches = list(batches)
    if not batches:
        raise InputError("batches is empty; pass at least one (inputs, targets) batch")
    rank, world = rank_and_world() if shard else (0, 1)
    if world > 1:
        check_same_batches(batches, "max_eigenvalue_spectrum")
    rows = {}
    for i in progress(range(rank, len(batches), world), desc="spectrum"):
        op = HessianOperator(
            model, loss_fn, [batches[i]], params=params, dtype=dtype, mode=mode, cache_graph=cache_graph
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # recorded per batch in `converged`
            result = top_eigenvalues(op, k, which, tol=tol, max_iter=max_iter, seed=seed + i)
        rows[i] = (result.eigenvalues, result.residuals, result.converged)
    for part in all_gather_objects(rows) if world > 1 else [rows]:
        rows.update(part)
    order = range(len(batches))
    failed = [i for i in order if not rows[i][2]]
    if failed:
        warnings.warn(
            f"max_eigenvalue_spectrum: batches {failed} did not converge within max_iter={max_iter} "
            f"(tol={tol}); see the result's residuals, or raise max_iter or tol",
            RuntimeWarning,
            stacklevel=2,
        )
    return SpectrumResult(
        eigenvalues=torch.stack([rows[i][0] for i in order]),
        residuals=torch.stack([rows[i][1] for i in order]),
        converged=torch.tensor([rows[i][2] for i in order]),
        which=which,
    )
