"""Hessian of the mean loss: an operator that only multiplies, and one file per algorithm.

    operator.py     HessianOperator (op @ v), LinearOperatorLike (what every algorithm accepts)
    distributed.py  DistributedHessianOperator (the same, all-reduced over ranks)
    adapters.py     as_operator / DenseOperator (dense matrices, scipy LinearOperators)
    eigen.py        EigenResult, `which` conventions, the convergence rule
    lanczos.py      Lanczos and top_eigenvalues     power.py    deflated power iteration
    trace.py        Hutchinson / Hutch++ trace       density.py  stochastic Lanczos quadrature
    spectrum.py     the paper's per-mini-batch spectrum

Weight decay is a loss wrapper (`alternet_pl.analysis.weight_decay.WeightDecayLoss`), not an
operator option.
"""

from alternet_pl.analysis.hessian.adapters import DenseOperator, as_operator
from alternet_pl.analysis.hessian.density import DensityResult, smoothed_density, spectral_density
from alternet_pl.analysis.hessian.distributed import DistributedHessianOperator
from alternet_pl.analysis.hessian.eigen import EIGEN_METHODS, WHICH, EigenMethod, EigenResult, Which
from alternet_pl.analysis.hessian.lanczos import top_eigenvalues
from alternet_pl.analysis.hessian.operator import MODES, BatchNormMode, HessianOperator, LinearOperatorLike
from alternet_pl.analysis.hessian.spectrum import SpectrumResult, max_eigenvalue_spectrum
from alternet_pl.analysis.hessian.trace import TRACE_METHODS, TraceMethod, TraceResult, trace

__all__ = [
    "EIGEN_METHODS",
    "MODES",
    "TRACE_METHODS",
    "WHICH",
    "BatchNormMode",
    "DenseOperator",
    "DensityResult",
    "DistributedHessianOperator",
    "EigenMethod",
    "EigenResult",
    "HessianOperator",
    "LinearOperatorLike",
    "SpectrumResult",
    "TraceMethod",
    "TraceResult",
    "Which",
    "as_operator",
    "max_eigenvalue_spectrum",
    "smoothed_density",
    "spectral_density",
    "top_eigenvalues",
    "trace",
]
