"""`EigenResult` and what every eigenvalue algorithm shares: which pairs are wanted, when they count
as converged, and the argument checks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from alternet_pl.errors import InputError

__all__ = ["EIGEN_METHODS", "WHICH", "EigenMethod", "EigenResult", "Which"]

#: scipy eigsh's convention: largest / smallest algebraic, largest magnitude, both ends
Which = Literal["LA", "SA", "LM", "BE"]
WHICH: tuple[str, ...] = get_args(Which)
EigenMethod = Literal["lanczos", "power"]
EIGEN_METHODS: tuple[str, ...] = get_args(EigenMethod)


@dataclass(frozen=True, eq=False)
class EigenResult:
    """Eigenpairs sorted ascending (as scipy's eigsh); unpacks as ``vals, vecs = result``.

    residuals: ``||H x - theta x||`` per pair (|lambda - theta| <= residual for some eigenvalue lambda).
    error_bounds: the bound on |lambda - theta| convergence was judged by (Lanczos: the residual
    sharpened by the spectral gap, see `lanczos.ritz_error_bounds`; power iteration: the residual).
    """

    eigenvalues: torch.Tensor  # (k,) float64, ascending
    eigenvectors: torch.Tensor  # (n, k) columns, operator dtype
    residuals: torch.Tensor  # (k,) float64
    converged: bool
    num_hvps: int
    method: str
    error_bounds: torch.Tensor | None = None  # (k,) float64

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield self.eigenvalues
        yield self.eigenvectors


def pick(theta: torch.Tensor, k: int, which: Which) -> torch.Tensor:
    """Indices of the wanted Ritz values among `theta` (ascending), in ascending order of value."""
    m = theta.numel()
    k = min(k, m)
    if which == "LA":
        idx = torch.arange(m - k, m)
    elif which == "SA":
        idx = torch.arange(k)
    elif which == "LM":
        idx = theta.abs().argsort(descending=True)[:k]
    else:  # BE: ceil(k/2) from the top, floor(k/2) from the bottom, as scipy
        idx = torch.cat([torch.arange(k // 2), torch.arange(m - (k + 1) // 2, m)])
    return idx[theta[idx].argsort()]


def is_converged(vals: torch.Tensor, res: torch.Tensor, norm: float, tol: float, dtype: torch.dtype) -> bool:
    """res <= tol * max(|theta|, eps^(2/3) ||H||): ARPACK's rule, its guard for eigenvalues near zero."""
    floor = torch.finfo(dtype).eps ** (2 / 3) * norm
    return bool((res <= tol * vals.abs().clamp_min(floor)).all())


def check_eig_args(size: int, k: int, which: str, tol: float, max_iter: int, method: str) -> None:
    """Raise ValueError naming the first bad argument of an eigenvalue call."""
    if which not in WHICH:
        raise InputError(f"which={which!r}; choose one of {WHICH} (scipy eigsh's convention)")
    if method not in EIGEN_METHODS:
        raise InputError(f"method={method!r}; choose one of {EIGEN_METHODS}")
    if not 1 <= k <= size:
        raise InputError(f"k={k} must be between 1 and the number of selected parameters ({size})")
    if max_iter < k and method == "lanczos":
        raise InputError(f"max_iter={max_iter} < k={k}: Lanczos needs at least k steps; raise max_iter")
    if not tol > 0:
        raise InputError(f"tol must be > 0, got {tol}")
