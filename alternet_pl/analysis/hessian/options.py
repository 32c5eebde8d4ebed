"""The Hessian analysis's options: one group per algorithm, and `HessianOptions`, all of them.

Frozen and valid by construction (`__post_init__` raises `InputError` with one line naming the option).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from alternet_pl.analysis.hessian.eigen import EigenMethod, Which
from alternet_pl.analysis.hessian.trace import TraceMethod
from alternet_pl.analysis.options import WeightDecayTerm
from alternet_pl.errors import InputError, check_choice

__all__ = [
    "DTYPES",
    "DensityOptions",
    "EigenOptions",
    "HessianOptions",
    "SpectrumOptions",
    "TraceOptions",
]

#: the precisions the products may run in
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class EigenOptions:
    """Extreme eigenvalues of the Hessian.

    Args:
        k: number of top (largest algebraic) eigenvalues.
        bottom: also the smallest algebraic eigenvalue.
        method: "lanczos" (residual stopping rule) or "power" (power iteration with deflation).
        tol: relative residual at which an eigenvalue counts as converged.
        max_iter: iterations at most.
    """

    k: int = 1
    bottom: bool = True
    method: EigenMethod = "lanczos"
    tol: float = 1e-3
    max_iter: int = 100

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InputError(f"EigenOptions: k={self.k}; ask for at least one eigenvalue")
        check_choice("EigenOptions", "method", self.method, EigenMethod)
        if not self.tol > 0 or self.max_iter < 1:
            raise InputError(
                f"EigenOptions: tol={self.tol}, max_iter={self.max_iter}; need tol > 0, max_iter >= 1"
            )


@dataclass(frozen=True)
class TraceOptions:
    """Stochastic trace estimate of the Hessian.

    Args:
        samples: Hessian-vector products spent on it (0: skip the trace).
        method: "hutch++" or "hutchinson".
    """

    samples: int = 30
    method: TraceMethod = "hutch++"

    def __post_init__(self) -> None:
        if self.samples and self.samples < 4:
            raise InputError(f"TraceOptions: samples={self.samples}; use 0 (off) or >= 4")
        check_choice("TraceOptions", "method", self.method, TraceMethod)


@dataclass(frozen=True)
class DensityOptions:
    """Spectral density by stochastic Lanczos quadrature (SLQ).

    Args:
        enabled: compute it.
        runs: independent Lanczos runs (random starts).
        steps: Lanczos steps per run.
    """

    enabled: bool = True
    runs: int = 1
    steps: int = 32

    def __post_init__(self) -> None:
        if self.runs < 1 or self.steps < 2:
            raise InputError(
                f"DensityOptions: runs={self.runs}, steps={self.steps}; need runs >= 1, steps >= 2"
            )


@dataclass(frozen=True)
class SpectrumOptions:
    """The per-mini-batch eigenvalue spectrum (the paper's "max eigenvalue spectrum", Fig. 1).

    Args:
        enabled: compute it.
        k: eigenvalues per batch.
        which: "LM" (largest magnitude: the paper's, negatives show), "LA", "SA" or "BE" (both ends).
        tol, max_iter: each batch's Lanczos stopping rule (as `EigenOptions`'; its own, not borrowed).
    """

    enabled: bool = False
    k: int = 2
    which: Which = "BE"
    tol: float = 1e-3
    max_iter: int = 100

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InputError(f"SpectrumOptions: k={self.k}; ask for at least one eigenvalue per batch")
        check_choice("SpectrumOptions", "which", self.which, Which)
        if not self.tol > 0 or self.max_iter < 1:
            raise InputError(
                f"SpectrumOptions: tol={self.tol}, max_iter={self.max_iter}; need tol > 0, max_iter >= 1"
            )


@dataclass(frozen=True)
class HessianOptions:
    """Everything that changes a Hessian result.

    Args:
        eigen, trace, density, spectrum: the algorithms' groups (`trace.samples=0` and
            `density/spectrum.enabled=False` leave them out).
        blockwise: top/min eigenvalue of each residual block's own Hessian (`analysis_layers()`).
        weight_decay: a weight-decay term added to the loss (coefficient 0: the clean loss).
        mode: BatchNorm statistics, "eval" (running) or "train" (per batch, running stats untouched).
        dtype: precision of the products.
        cache_graph: reuse each batch's first-backward graph across products (off by itself when the
            model is cast to another dtype).
        seed: seeds the random starts and probes of every algorithm.
    """

    eigen: EigenOptions = field(default_factory=EigenOptions)
    trace: TraceOptions = field(default_factory=TraceOptions)
    density: DensityOptions = field(default_factory=DensityOptions)
    spectrum: SpectrumOptions = field(default_factory=SpectrumOptions)
    blockwise: bool = False
    weight_decay: WeightDecayTerm = field(default_factory=WeightDecayTerm)
    mode: Literal["eval", "train"] = "eval"
    dtype: Literal["float32", "float64"] = "float32"
    cache_graph: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("HessianOptions", "mode", self.mode, ("eval", "train"))
        check_choice("HessianOptions", "dtype", self.dtype, DTYPES)
