"""Grouped options of the analysis callbacks: small frozen dataclasses that jsonargparse shows as nested
groups in `--help` and `--print_config` (e.g. `--analyses.data.num_batches`, `hessian.eigen.k`).

Each validates itself on construction, so a wrong value fails with one line naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alternet_pl.analysis.hessian import EigenMethod, TraceMethod, Which
from alternet_pl.analysis.weight_decay import WeightDecayForm
from alternet_pl.errors import InputError, check_choice

__all__ = [
    "AnalysisData",
    "DensityOptions",
    "EigenOptions",
    "Schedule",
    "SpectrumOptions",
    "TraceOptions",
    "WeightDecayTerm",
    "check_choice",
]

Split = Literal["val", "train"]
When = Literal["fit_start", "warmup_end", "fit_end"]


@dataclass(frozen=True)
class AnalysisData:
    """The fixed batches an analysis runs on (the same ones every time it runs).

    Args:
        split: "val" (validation images) or "train" (training images).
        augment: use the training transform, and mixup / cutmix when the module has it (the paper's
            Hessian and landscape data); False: the evaluation transform.
        num_batches: how many batches.
        batch_size: analysis batch size (None: the datamodule's).
        seed: seeds the order of the batches and any randomness of the analysis itself.
    """

    split: Split = "val"
    augment: bool = False
    num_batches: int = 4
    batch_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("AnalysisData", "split", self.split, Split)
        if self.num_batches < 1:
            raise InputError(f"AnalysisData: num_batches={self.num_batches}; use at least 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"AnalysisData: batch_size={self.batch_size}; use at least 1 or None")


@dataclass(frozen=True)
class Schedule:
    """When an analysis runs during `fit`.

    Args:
        at: any of "fit_start", "warmup_end" (after the last warm-up epoch), "fit_end".
        every_n_epochs: also after every n-th training epoch (None: only at the `at` points).
    """

    at: tuple[When, ...] = ("fit_end",)
    every_n_epochs: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", tuple(self.at))
        for when in self.at:
            check_choice("Schedule", "at", when, When)
        if self.every_n_epochs is not None and self.every_n_epochs < 1:
            raise InputError(f"Schedule: every_n_epochs={self.every_n_epochs}; use >= 1 or None")


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
    """

    enabled: bool = False
    k: int = 2
    which: Which = "BE"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InputError(f"SpectrumOptions: k={self.k}; ask for at least one eigenvalue per batch")
        check_choice("SpectrumOptions", "which", self.which, Which)


@dataclass(frozen=True)
class WeightDecayTerm:
    """A weight-decay term added to the analysed loss (0: the clean loss).

    Args:
        coefficient: its weight (the paper: 0.05, its AdamW weight decay).
        form: "norm" (coefficient * sum_p ||theta_p||_2 over parameter tensors, the official code's
            term) or "l2" (0.5 * coefficient * ||theta||^2, i.e. + coefficient * I in the Hessian).
    """

    coefficient: float = 0.0
    form: WeightDecayForm = "norm"

    def __post_init__(self) -> None:
        if self.coefficient < 0:
            raise InputError(f"WeightDecayTerm: coefficient={self.coefficient}; use >= 0")
        check_choice("WeightDecayTerm", "form", self.form, WeightDecayForm)
