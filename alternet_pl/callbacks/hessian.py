"""`HessianCallback` ("hessian"): extreme eigenvalues, trace, SLQ density, the per-mini-batch spectrum
and block-wise eigenvalues of the loss Hessian, on every rank (batches sharded, HVPs all-reduced).

Logged scalars: `hessian/top_eig`, `hessian/min_eig`, `hessian/trace` (+ `trace_stderr`, `num_hvps`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis import hessian as hs
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext, AnalysisResult
from alternet_pl.plots import hessian as plots

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class HessianCallback(AnalysisCallback):
    """Hessian spectrum of the mean loss over the analysis batches.

    Args:
        k: number of top (largest algebraic) eigenvalues; `bottom` adds the smallest one.
        method, tol, max_iter: see `top_eigenvalues` (Lanczos with a residual stopping rule by default).
        mode: BatchNorm statistics, "eval" (running) or "train" (per batch, running stats untouched).
        dtype: "float32" or "float64".
        cache_graph: reuse each batch's first-backward graph across products (one backward per
            product instead of forward + two; memory of the graphs; off automatically for float64).
        trace_samples: HVPs for the trace estimate (0: skip); `trace_method` "hutch++" or "hutchinson".
        density: SLQ density with `density_runs` runs of `density_steps` Lanczos steps.
        spectrum: the per-mini-batch spectrum, `spectrum_k` eigenvalues of kind `spectrum_which` per batch.
        blockwise: top/min eigenvalue of each residual block's own Hessian (`analysis_layers()` branches).
        paper_setting: the paper's max-eigenvalue spectrum: augmented training batches (with mixup), the
            weight-decay term wd * sum_p ||theta_p||_2 (as its official landscape code), spectrum on,
            5 largest-magnitude eigenvalues per batch. Explicit arguments still win.
        weight_decay: coefficient of that term (None: the module's under `paper_setting`, else 0).
        weight_decay_form: "norm" (wd * sum_p ||theta_p||_2, the official code's term) or "l2"
            (0.5 * wd * ||theta||^2, i.e. + wd * I); see `HessianOperator`.
    """

    name = "hessian"

    def __init__(
        self,
        k: int = 1,
        bottom: bool = True,
        method: str = "lanczos",
        tol: float = 1e-3,
        max_iter: int = 100,
        mode: str = "eval",
        dtype: str = "float32",
        cache_graph: bool = True,
        trace_samples: int = 30,
        trace_method: str = "hutch++",
        density: bool = True,
        density_runs: int = 1,
        density_steps: int = 32,
        spectrum: bool | None = None,
        spectrum_k: int | None = None,
        spectrum_which: str | None = None,
        blockwise: bool = False,
        paper_setting: bool = False,
        weight_decay: float | None = None,
        weight_decay_form: str = "norm",
        **kwargs: Any,
    ) -> None:
        self.paper_setting = paper_setting  # read by the base for the data / augment defaults
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"HessianCallback: k={k}; ask for at least one eigenvalue")
        if dtype not in DTYPES:
            raise ValueError(f"HessianCallback: dtype={dtype!r}; choose one of {list(DTYPES)}")
        if (
            mode not in hs.MODES
            or trace_method not in ("hutch++", "hutchinson")
            or method not in ("lanczos", "power")
        ):
            raise ValueError(
                f"HessianCallback: mode={mode!r}, method={method!r}, trace_method={trace_method!r}; "
                f"choose from {hs.MODES}, ('lanczos', 'power'), ('hutch++', 'hutchinson')"
            )
        if trace_samples and trace_samples < 4:
            raise ValueError(f"HessianCallback: trace_samples={trace_samples}; use 0 (off) or >= 4")
        self.k, self.bottom, self.method, self.tol, self.max_iter = k, bottom, method, tol, max_iter
        self.mode, self.dtype = mode, dtype
        self.cache_graph = cache_graph
        self.trace_samples, self.trace_method = trace_samples, trace_method
        self.density, self.density_runs, self.density_steps = density, density_runs, density_steps
        self.spectrum = paper_setting if spectrum is None else spectrum
        self.spectrum_k = spectrum_k or (5 if paper_setting else 2)
        self.spectrum_which = spectrum_which or ("LM" if paper_setting else "BE")
        if self.spectrum_which not in hs.WHICH:
            raise ValueError(
                f"HessianCallback: spectrum_which={self.spectrum_which!r}; choose from {hs.WHICH}"
            )
        self.blockwise, self.weight_decay = blockwise, weight_decay
        if weight_decay_form not in hs.WEIGHT_DECAY_FORMS:
            raise ValueError(
                f"HessianCallback: weight_decay_form={weight_decay_form!r}; "
                f"choose from {hs.WEIGHT_DECAY_FORMS}"
            )
        self.weight_decay_form = weight_decay_form

    def _extremes(self, op: hs.HessianOperator) -> tuple[np.ndarray, float, np.ndarray, bool]:
        """(top-k eigenvalues, min eigenvalue or nan, residuals, converged) in one Lanczos run if possible."""
        kw = dict(tol=self.tol, max_iter=self.max_iter, method=self.method, seed=self.seed)
        if self.bottom and self.k == 1 and self.method == "lanczos":
            r = hs.top_eigenvalues(op, 2, "BE", **kw)
            return r.eigenvalues[1:].numpy(), float(r.eigenvalues[0]), r.residuals.numpy(), r.converged
        top = hs.top_eigenvalues(op, self.k, "LA", **kw)
        res, ok, low = top.residuals.numpy(), top.converged, float("nan")
        if self.bottom:
            r = hs.top_eigenvalues(op, 1, "SA", **kw)
            low, res, ok = (
                float(r.eigenvalues[0]),
                np.concatenate([r.residuals.numpy(), res]),
                ok and r.converged,
            )
        return top.eigenvalues.numpy(), low, res, ok

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> AnalysisResult:
        wd = self.weight_decay_coefficient(context.module)
        dtype = DTYPES[self.dtype]
        cache = self.cache_graph and all(t.dtype == dtype for t in model.parameters())  # no cast: cacheable
        kw = dict(
            dtype=dtype,
            mode=self.mode,
            weight_decay=wd,
            weight_decay_form=self.weight_decay_form,
            cache_graph=cache,
        )
        shard = batches[context.rank :: context.world_size]  # the operator all-reduces over ranks
        op = hs.HessianOperator(model, loss_fn, shard, **kw)
        top, low, residuals, converged = self._extremes(op)
        scalars = {"top_eig": float(top[-1]), "min_eig": low}
        arrays: dict[str, Any] = {"eigenvalues": top, "residuals": residuals}
        if self.trace_samples:
            mean, stderr = hs.trace(op, self.trace_samples, seed=self.seed, method=self.trace_method)
            scalars.update(trace=mean, trace_stderr=stderr)
        if self.density:
            nodes, weights = hs.spectral_density(op, self.density_runs, self.density_steps, seed=self.seed)
            arrays.update(density_nodes=nodes.numpy(), density_weights=weights.numpy())
        scalars["num_hvps"] = float(op.num_hvps)
        op.clear_cache()
        summary: dict[str, Any] = {
            "k": self.k,
            "method": self.method,
            "tol": self.tol,
            "mode": self.mode,
            "dtype": self.dtype,
            "converged": converged,
            "num_params": op.size,
            "weight_decay": wd,
            "data": self.data,
            "augment": self.augment,
            "num_samples": sum(int(b[1].shape[0]) for b in batches),
        }
        if self.spectrum:
            spec, spec_res, spec_ok = hs.max_eigenvalue_spectrum(
                model,
                loss_fn,
                batches,
                self.spectrum_k,
                self.spectrum_which,
                tol=self.tol,
                max_iter=self.max_iter,
                seed=self.seed,
                return_info=True,
                **kw,
            )
            arrays.update(spectrum=spec.numpy(), spectrum_residuals=spec_res.numpy())
            unconverged = (~spec_ok).nonzero().flatten().tolist()
            summary.update(spectrum_which=self.spectrum_which, spectrum_unconverged_batches=unconverged)
        if self.blockwise:
            names, kinds, tops, lows = [], [], [], []
            for name, tap in _blocks(model):
                block_op = hs.HessianOperator(model, loss_fn, shard, params=list(tap.block_modules()), **kw)
                t, lo, _, _ = self._extremes(block_op)
                names.append(name)
                kinds.append(tap.kind)
                tops.append(float(t[-1]))
                lows.append(lo)
            arrays.update(block_top_eig=np.array(tops), block_min_eig=np.array(lows))
            summary.update(block_names=names, block_kinds=kinds)
        return AnalysisResult(scalars=scalars, summary=summary, arrays=arrays)

    def plot(self, result: AnalysisResult, context: AnalysisContext) -> dict[str, Any]:
        a, s = result.arrays, result.scalars
        figures: dict[str, Any] = {}
        if "density_nodes" in a:
            figures[""] = plots.density_figure(
                a["density_nodes"],
                a["density_weights"],
                s["top_eig"],
                s["min_eig"],
                title=f"Hessian density (epoch {context.epoch})",
            )
        if "spectrum" in a:
            figures["spectrum"] = plots.spectrum_figure(a["spectrum"])
        if "block_top_eig" in a:
            figures["blockwise"] = plots.blockwise_figure(
                result.summary["block_names"],
                result.summary["block_kinds"],
                a["block_top_eig"],
                a["block_min_eig"],
            )
        return figures


def _blocks(model: nn.Module) -> list[tuple[str, Any]]:
    """(name, tap) of each block with trainable parameters (`Tap.block_modules`), from analysis_layers()."""
    if not hasattr(model, "analysis_layers"):
        raise TypeError(
            f"HessianCallback(blockwise=True) needs model.analysis_layers(); {type(model).__name__} "
            "has none: use a model registered by alternet_pl.models or blockwise=False"
        )
    seen, out = set(), []
    for name, tap in model.analysis_layers().items():
        if tap.kind not in ("conv", "msa", "mlp"):
            continue
        modules = tap.block_modules()
        key = tuple(id(m) for m in modules)
        if not modules or key in seen or not any(p.requires_grad for m in modules for p in m.parameters()):
            continue
        seen.add(key)
        out.append((name, tap))
    if not out:
        raise ValueError(
            f"HessianCallback(blockwise=True): {type(model).__name__}.analysis_layers() has no conv/msa/mlp "
            "block with trainable parameters; use blockwise=False"
        )
    return out
