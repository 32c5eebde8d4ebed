"""`HessianCallback` ("hessian"): extreme eigenvalues, trace, SLQ density, the per-mini-batch spectrum
and block-wise eigenvalues of the loss Hessian, on every rank (batches sharded, HVPs all-reduced).

Logged scalars: `hessian/top_eig`, `hessian/min_eig`, `hessian/trace` (+ `trace_stderr`, `num_hvps`).
Result: `HessianRecord`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis import hessian as hs
from alternet_pl.analysis.layers import model_layers
from alternet_pl.analysis.records import HessianRecord
from alternet_pl.analysis.weight_decay import WeightDecayLoss
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext
from alternet_pl.callbacks.options import (
    DensityOptions,
    EigenOptions,
    SpectrumOptions,
    TraceOptions,
    WeightDecayTerm,
    check_choice,
)
from alternet_pl.errors import InputError
from alternet_pl.plots import hessian as plots

__all__ = ["HessianCallback"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class HessianCallback(AnalysisCallback):
    """Hessian spectrum of the mean loss over the analysis batches.

    Defaults are the clean loss on validation batches; the paper's setting (augmented training
    batches with mixup, the weight-norm term 0.05, top-5 largest-magnitude eigenvalues per batch)
    is `configs/analysis/paper.yaml`.

    Args:
        eigen: extreme eigenvalues (top-k, and the bottom one).
        trace: the stochastic trace estimate (`samples=0` skips it).
        density: the SLQ spectral density.
        spectrum: the per-mini-batch spectrum (the paper's Fig. 1).
        blockwise: top/min eigenvalue of each residual block's own Hessian (`analysis_layers()` branches).
        weight_decay: a weight-decay term added to the loss (coefficient 0: the clean loss).
        mode: BatchNorm statistics, "eval" (running) or "train" (per batch, running stats untouched).
        dtype: precision of the products.
        cache_graph: reuse each batch's first-backward graph across products (one backward per
            product instead of forward + two; memory of the graphs; off automatically when the
            model is cast to another dtype).
        data, schedule, log_images, strict: see `AnalysisCallback`.
    """

    name = "hessian"

    def __init__(
        self,
        eigen: EigenOptions = EigenOptions(),
        trace: TraceOptions = TraceOptions(),
        density: DensityOptions = DensityOptions(),
        spectrum: SpectrumOptions = SpectrumOptions(),
        blockwise: bool = False,
        weight_decay: WeightDecayTerm = WeightDecayTerm(),
        mode: Literal["eval", "train"] = "eval",
        dtype: Literal["float32", "float64"] = "float32",
        cache_graph: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_choice("HessianCallback", "mode", mode, Literal["eval", "train"])
        check_choice("HessianCallback", "dtype", dtype, tuple(DTYPES))
        self.eigen, self.trace, self.density, self.spectrum = eigen, trace, density, spectrum
        self.blockwise, self.weight_decay = blockwise, weight_decay
        self.mode, self.dtype, self.cache_graph = mode, dtype, cache_graph

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "eigen": asdict(self.eigen),
            "trace": asdict(self.trace),
            "density": asdict(self.density),
            "spectrum": asdict(self.spectrum),
            "blockwise": self.blockwise,
            "weight_decay": asdict(self.weight_decay),
            "mode": self.mode,
            "dtype": self.dtype,
            "cache_graph": self.cache_graph,
        }

    def _extremes(self, op: hs.LinearOperatorLike) -> tuple[np.ndarray, float, np.ndarray, bool]:
        """(top-k eigenvalues, min eigenvalue or nan, residuals, converged) in one Lanczos run if possible."""
        e = self.eigen
        kw = dict(tol=e.tol, max_iter=e.max_iter, method=e.method, seed=self.data.seed)
        if e.bottom and e.k == 1 and e.method == "lanczos":
            r = hs.top_eigenvalues(op, 2, "BE", **kw)
            return r.eigenvalues[1:].numpy(), float(r.eigenvalues[0]), r.residuals.numpy(), r.converged
        top = hs.top_eigenvalues(op, e.k, "LA", **kw)
        res, ok, low = top.residuals.numpy(), top.converged, float("nan")
        if e.bottom:
            r = hs.top_eigenvalues(op, 1, "SA", **kw)
            low, res, ok = (
                float(r.eigenvalues[0]),
                np.concatenate([r.residuals.numpy(), res]),
                ok and r.converged,
            )
        return top.eigenvalues.numpy(), low, res, ok

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> HessianRecord:
        seed = self.data.seed
        if self.weight_decay.coefficient:
            loss_fn = WeightDecayLoss(loss_fn, self.weight_decay.coefficient, self.weight_decay.form)
        dtype = DTYPES[self.dtype]
        cache = self.cache_graph and all(t.dtype == dtype for t in model.parameters())  # no cast: cacheable
        kw = dict(dtype=dtype, mode=self.mode, cache_graph=cache)
        shard = batches[context.rank :: context.world_size]  # the operator all-reduces over ranks
        op = hs.DistributedHessianOperator(model, loss_fn, shard, **kw)
        top, low, residuals, converged = self._extremes(op)
        parts: dict[str, Any] = {}
        if self.trace.samples:
            tr = hs.trace(op, self.trace.samples, seed=seed, method=self.trace.method)
            parts.update(trace=tr.estimate, trace_stderr=tr.stderr)
        if self.density.enabled:
            dens = hs.spectral_density(op, self.density.runs, self.density.steps, seed=seed)
            parts.update(density_nodes=dens.nodes.numpy(), density_weights=dens.weights.numpy())
        num_hvps, num_params = op.num_hvps, op.size
        op.clear_cache()
        if self.spectrum.enabled:
            spec = hs.max_eigenvalue_spectrum(
                model,
                loss_fn,
                batches,
                self.spectrum.k,
                self.spectrum.which,
                tol=self.eigen.tol,
                max_iter=self.eigen.max_iter,
                seed=seed,
                **kw,
            )
            parts.update(
                spectrum=spec.eigenvalues.numpy(),
                spectrum_residuals=spec.residuals.numpy(),
                spectrum_which=self.spectrum.which,
                spectrum_unconverged_batches=spec.unconverged_batches,
            )
        if self.blockwise:
            names, kinds, tops, lows = [], [], [], []
            for name, tap in _blocks(model):
                params = list(tap.block_modules())
                block_op = hs.DistributedHessianOperator(model, loss_fn, shard, params=params, **kw)
                t, lo, _, _ = self._extremes(block_op)
                names.append(name)
                kinds.append(tap.kind)
                tops.append(float(t[-1]))
                lows.append(lo)
            parts.update(
                block_names=names,
                block_kinds=kinds,
                block_top_eig=np.array(tops),
                block_min_eig=np.array(lows),
            )
        return HessianRecord(
            eigenvalues=top,
            residuals=residuals,
            top_eig=float(top[-1]),
            min_eig=low,
            converged=bool(converged),
            num_params=int(num_params),
            num_samples=sum(int(b[1].shape[0]) for b in batches),
            num_hvps=int(num_hvps),
            **parts,
        )

    def plot(self, record: HessianRecord, context: AnalysisContext) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        if record.density_nodes is not None:
            figures[""] = plots.density_figure(
                record.density_nodes,
                record.density_weights,
                record.top_eig,
                record.min_eig,
                title=f"Hessian density (epoch {context.epoch})",
            )
        if record.spectrum is not None:
            figures["spectrum"] = plots.spectrum_figure(record.spectrum)
        if record.block_top_eig is not None:
            figures["blockwise"] = plots.blockwise_figure(
                record.block_names, record.block_kinds, record.block_top_eig, record.block_min_eig
            )
        return figures


def _blocks(model: nn.Module) -> list[tuple[str, Any]]:
    """(name, tap) of each block with trainable parameters (`Tap.block_modules`), from the model's
    points (`analysis.layers.model_layers`: ``analysis_layers()`` or the blocks found in the model)."""
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
