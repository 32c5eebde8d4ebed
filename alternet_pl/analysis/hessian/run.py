"""The Hessian analysis as one function: `run(model, loss_fn, batches, options) -> HessianRecord`.

Extreme eigenvalues (one Lanczos run for both ends when it can), the trace, the SLQ density, the
per-mini-batch spectrum and the block-wise eigenvalues, each by its algorithm in this package; under
torch.distributed every rank passes the same batches, each multiplies with its shard and the
products are all-reduced, so every rank returns the same record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.dist import rank_and_world
from alternet_pl.analysis.hessian.density import spectral_density
from alternet_pl.analysis.hessian.distributed import DistributedHessianOperator
from alternet_pl.analysis.hessian.lanczos import top_eigenvalues
from alternet_pl.analysis.hessian.operator import LinearOperatorLike
from alternet_pl.analysis.hessian.options import HessianOptions
from alternet_pl.analysis.hessian.spectrum import SpectrumResult, max_eigenvalue_spectrum
from alternet_pl.analysis.hessian.trace import trace
from alternet_pl.analysis.layers import model_layers
from alternet_pl.analysis.records import HessianRecord
from alternet_pl.analysis.weight_decay import WeightDecayLoss
from alternet_pl.errors import InputError

__all__ = [
    "BlockEigenvalues",
    "Extremes",
    "HessianOptions",
    "blockwise",
    "extremes",
    "residual_blocks",
    "run",
]

_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Extremes:
    """The top-k eigenvalues (ascending), the bottom one (NaN when not asked), all their residuals."""

    top: np.ndarray
    bottom: float
    residuals: np.ndarray
    converged: bool


def extremes(op: LinearOperatorLike, options: HessianOptions) -> Extremes:
    """Top-k and (with `eigen.bottom`) the smallest eigenvalue: both ends in one Lanczos run ("BE")
    when k is 1, else a top-k run and a bottom run."""
    e = options.eigen
    kw = dict(tol=e.tol, max_iter=e.max_iter, method=e.method, seed=options.seed)
    if e.bottom and e.k == 1 and e.method == "lanczos":
        r = top_eigenvalues(op, 2, "BE", **kw)
        return Extremes(r.eigenvalues[1:].numpy(), float(r.eigenvalues[0]), r.residuals.numpy(), r.converged)
    top = top_eigenvalues(op, e.k, "LA", **kw)
    if not e.bottom:
        return Extremes(top.eigenvalues.numpy(), float("nan"), top.residuals.numpy(), top.converged)
    low = top_eigenvalues(op, 1, "SA", **kw)
    residuals = np.concatenate([low.residuals.numpy(), top.residuals.numpy()])
    return Extremes(
        top.eigenvalues.numpy(), float(low.eigenvalues[0]), residuals, top.converged and low.converged
    )


def residual_blocks(model: nn.Module) -> list[tuple[str, Any]]:
    """(name, tap) of each block with trainable parameters (`Tap.block_modules`), from the model's
    points (`analysis.layers.model_layers`: ``analysis_layers()`` or the blocks found in the model).

    Raises `InputError` when the model has no such block.
    """
    seen, out = set(), []
    for name, tap in model_layers(model).items():
        if tap.kind not in ("conv", "msa", "mlp", "other"):
            continue
        modules = tap.block_modules()
        key = tuple(id(m) for m in modules)
        if not modules or key in seen or not any(p.requires_grad for m in modules for p in m.parameters()):
            continue
        seen.add(key)
        out.append((name, tap))
    if not out:
        raise InputError(
            f"HessianCallback(blockwise=True): {type(model).__name__} has no conv/msa/mlp/other "
            "block with trainable parameters; use blockwise=False"
        )
    return out


def _operator_args(model: nn.Module, options: HessianOptions) -> dict[str, Any]:
    dtype = _TORCH_DTYPES[options.dtype]
    cache = options.cache_graph and all(t.dtype == dtype for t in model.parameters())  # no cast
    return dict(dtype=dtype, mode=options.mode, cache_graph=cache)


@dataclass(frozen=True)
class BlockEigenvalues:
    """Each residual block's own top and bottom eigenvalue (its parameters' Hessian)."""

    names: list[str]
    kinds: list[str]
    top: np.ndarray
    bottom: np.ndarray


def blockwise(model: nn.Module, loss_fn: Callable, shard: list, options: HessianOptions) -> BlockEigenvalues:
    """`BlockEigenvalues` of every block `residual_blocks` finds (same stopping rule as `extremes`)."""
    names, kinds, tops, lows = [], [], [], []
    for name, tap in residual_blocks(model):
        params = list(tap.block_modules())
        op = DistributedHessianOperator(
            model, loss_fn, shard, params=params, **_operator_args(model, options)
        )
        found = extremes(op, options)
        names.append(name)
        kinds.append(tap.kind)
        tops.append(float(found.top[-1]))
        lows.append(found.bottom)
    return BlockEigenvalues(names, kinds, np.array(tops), np.array(lows))


def _spectrum(
    model: nn.Module, loss_fn: Callable, batches: list, options: HessianOptions, operator_args: dict[str, Any]
) -> SpectrumResult:
    """The per-mini-batch spectrum with `options.spectrum`'s own stopping rule."""
    s = options.spectrum
    return max_eigenvalue_spectrum(
        model,
        loss_fn,
        batches,
        s.k,
        s.which,
        tol=s.tol,
        max_iter=s.max_iter,
        seed=options.seed,
        **operator_args,
    )


def run(model: nn.Module, loss_fn: Callable, batches: list, options: HessianOptions) -> HessianRecord:
    """The Hessian analysis of the mean of `loss_fn` (+ `options.weight_decay`) over `batches`.

    Every rank passes the same full list of batches. Returns a `HessianRecord` (its optional parts
    None / empty when not asked for). Raises `InputError` for a weight-decay coefficient still "train"
    or a block-wise analysis of a model without blocks.
    """
    coefficient = options.weight_decay.value()
    if coefficient:
        loss_fn = WeightDecayLoss(loss_fn, coefficient, options.weight_decay.form)
    rank, world = rank_and_world()
    shard = batches[rank::world]  # the operator all-reduces over ranks
    operator_args = _operator_args(model, options)
    op = DistributedHessianOperator(model, loss_fn, shard, **operator_args)
    found = extremes(op, options)
    tr = (
        trace(op, options.trace.samples, seed=options.seed, method=options.trace.method)
        if options.trace.samples
        else None
    )
    dens = (
        spectral_density(op, options.density.runs, options.density.steps, seed=options.seed)
        if options.density.enabled
        else None
    )
    num_hvps, num_params = op.num_hvps, op.size
    op.clear_cache()
    spec = _spectrum(model, loss_fn, batches, options, operator_args) if options.spectrum.enabled else None
    blocks = blockwise(model, loss_fn, shard, options) if options.blockwise else None
    return HessianRecord(
        eigenvalues=found.top,
        residuals=found.residuals,
        top_eig=float(found.top[-1]),
        min_eig=found.bottom,
        converged=bool(found.converged),
        num_params=int(num_params),
        num_samples=sum(int(b[1].shape[0]) for b in batches),
        num_hvps=int(num_hvps),
        trace=None if tr is None else tr.estimate,
        trace_stderr=None if tr is None else tr.stderr,
        density_nodes=None if dens is None else dens.nodes.numpy(),
        density_weights=None if dens is None else dens.weights.numpy(),
        spectrum=None if spec is None else spec.eigenvalues.numpy(),
        spectrum_residuals=None if spec is None else spec.residuals.numpy(),
        spectrum_which=None if spec is None else options.spectrum.which,
        spectrum_unconverged_batches=[] if spec is None else spec.unconverged_batches,
        block_names=[] if blocks is None else blocks.names,
        block_kinds=[] if blocks is None else blocks.kinds,
        block_top_eig=None if blocks is None else blocks.top,
        block_min_eig=None if blocks is None else blocks.bottom,
    )
