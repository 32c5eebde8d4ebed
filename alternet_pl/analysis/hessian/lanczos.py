"""Lanczos with full reorthogonalisation, and `top_eigenvalues`: k extreme eigenpairs that stop as
soon as every wanted Ritz value's error bound is small enough (not after a fixed number of steps)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from alternet_pl.analysis.hessian._vectors import gaussian, orthogonalise
from alternet_pl.analysis.hessian.adapters import CountingOperator, as_operator
from alternet_pl.analysis.hessian.eigen import (
    EigenMethod,
    EigenResult,
    Which,
    check_eig_args,
    is_converged,
    pick,
)
from alternet_pl.analysis.hessian.operator import LinearOperatorLike
from alternet_pl.analysis.hessian.power import power_eigenpairs
from alternet_pl.analysis.progress import progress

__all__ = ["lanczos", "ritz_error_bounds", "top_eigenvalues", "tridiagonal_eigh"]


def lanczos(
    op: LinearOperatorLike,
    q: torch.Tensor,
    steps: int,
    gen: torch.Generator,
    stop: Callable[[list[float], list[float]], bool] | None = None,
    desc: str = "lanczos",
) -> tuple[list[float], list[float], torch.Tensor]:
    """At most `steps` Lanczos steps from `q`; returns (alphas, betas, basis rows Q).

    betas[-1] is the norm of the last residual vector. A (near) breakdown restarts from a random
    vector orthogonal to the basis (coupling beta set to 0). `stop(alphas, betas)` ends it early.
    """
    steps = min(steps, op.size)
    basis = torch.empty(min(steps, 16), op.size, dtype=op.dtype, device=op.device)  # grows by doubling
    alphas: list[float] = []
    betas: list[float] = []
    eps = torch.finfo(op.dtype).eps
    q = q / q.norm()
    for j in progress(range(steps), desc=desc, total=steps):
        if j == basis.shape[0]:
            basis = torch.cat(
                [basis, torch.empty(min(j, steps - j), op.size, dtype=op.dtype, device=op.device)]
            )
        basis[j] = q
        w = op @ q
        alpha = float(q @ w)
        w = orthogonalise(w - alpha * q - (betas[-1] * basis[j - 1] if j else 0.0), basis[: j + 1])
        beta = float(w.norm())
        alphas.append(alpha)
        betas.append(beta)
        if j + 1 == steps or (stop is not None and stop(alphas, betas)):
            break
        scale = max(abs(a) for a in alphas) + max(betas)
        if beta <= 100 * eps * scale:  # invariant subspace: exact Ritz values; restart orthogonally
            betas[-1] = 0.0
            w = orthogonalise(gaussian(op.size, gen, op.dtype, op.device), basis[: j + 1])
            q = w / w.norm()
        else:
            q = w / beta
    return alphas, betas, basis[: len(alphas)]


def tridiagonal_eigh(alphas: list[float], betas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the Lanczos tridiagonal, in float64."""
    a = torch.tensor(alphas, dtype=torch.float64)
    b = torch.tensor(betas[:-1], dtype=torch.float64)
    return torch.linalg.eigh(torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1))


def ritz_error_bounds(theta: torch.Tensor, s: torch.Tensor, beta: float, idx: torch.Tensor) -> torch.Tensor:
    """Bounds on |lambda - theta_i| for the Ritz values ``theta[idx]`` of a Lanczos tridiagonal.

    The residual r_i = |beta * s[-1, i]| bounds the error by itself. Once the eigenvalue is separated
    from the rest of the spectrum by a gap, the error is at most r_i^2 / gap (Kato-Temple; Parlett,
    The Symmetric Eigenvalue Problem, 11.7), so the residual rule stops far too late (errors of 1e-7
    where 1e-3 was asked). The gap is estimated safely: to the nearest other Ritz value minus that
    value's own residual (an eigenvalue lies within it), and no wider than (theta_max - theta_min) /
    (4 m^2), the closest two eigenvalues m Lanczos steps can tell apart (Chebyshev), so an eigenvalue
    the Krylov space has not resolved yet cannot hide inside the gap. Where that gap does not exceed
    r_i the bound falls back to r_i. Returns float64 bounds, one per index.
    """
    res_all = (beta * s[-1]).abs()
    r = res_all[idx]
    m = theta.numel()
    if m < 2:
        return r
    dist = (theta[idx, None] - theta[None, :]).abs()
    dist[torch.arange(len(idx)), idx] = math.inf
    gap = (dist - res_all[None, :]).min(1).values
    gap = gap.clamp_max(float(theta.max() - theta.min()) / (4 * m * m))
    return torch.where(gap > r, r * r / gap.clamp_min(torch.finfo(torch.float64).tiny), r)


def top_eigenvalues(
    op: LinearOperatorLike | Any,
    k: int = 1,
    which: Which = "LA",
    tol: float = 1e-4,
    max_iter: int = 100,
    method: EigenMethod = "lanczos",
    seed: int = 0,
) -> EigenResult:
    """k extreme eigenpairs of the symmetric operator `op` (scipy eigsh's `which`, ascending order).

    Converged when every wanted value's error bound <= tol * max(|theta|, eps^(2/3) * ||H||), so tol
    bounds the relative eigenvalue error. Lanczos (default): full reorthogonalisation, stops as soon as
    that holds (error bound: the residual sharpened by the spectral gap, `ritz_error_bounds`), at most
    `max_iter` products in all. Power: deflated power iteration (the peers' method, `max_iter` products
    per eigenvalue; LA/SA via a spectral shift; no "BE"), judged by its residuals.

    Returns an `EigenResult`; a run that did not converge warns (RuntimeWarning, with its bounds)
    and returns ``converged=False``. Raises ValueError for bad arguments, TypeError for a non-operator.
    """
    op = CountingOperator(as_operator(op))
    check_eig_args(op.size, k, which, tol, max_iter, method)
    gen = torch.Generator().manual_seed(seed)
    if method == "power":
        vals, vecs, res, norm = power_eigenpairs(op, k, which, tol, max_iter, gen)
    else:

        def converged(alphas: list[float], betas: list[float]) -> bool:
            if len(alphas) < k:
                return False
            theta, s = tridiagonal_eigh(alphas, betas)
            idx = pick(theta, k, which)
            bounds = ritz_error_bounds(theta, s, betas[-1], idx)
            return is_converged(theta[idx], bounds, float(theta.abs().max()), tol, op.dtype)

        q0 = gaussian(op.size, gen, op.dtype, op.device)
        alphas, betas, basis = lanczos(op, q0, max_iter, gen, stop=converged, desc=f"lanczos {which}")
        theta, s = tridiagonal_eigh(alphas, betas)
        idx = pick(theta, k, which)
        vals, res = theta[idx], (betas[-1] * s[-1, idx]).abs()
        bounds = ritz_error_bounds(theta, s, betas[-1], idx)
        vecs = basis.T @ s[:, idx].to(op.dtype).to(op.device)
        norm = float(theta.abs().max())
    if method == "power":
        bounds = res
    ok = len(vals) == k and is_converged(vals, bounds, norm, tol, op.dtype)
    if not ok:
        warnings.warn(
            f"top_eigenvalues({method}, which={which}) did not converge in {op.num_products} HVPs: "
            f"eigenvalues {vals.tolist()} have error bounds {bounds.tolist()} (residuals {res.tolist()}) "
            f"> tol={tol} (relative); "
            "raise max_iter or tol",
            RuntimeWarning,
            stacklevel=2,
        )
    return EigenResult(vals, vecs, res, ok, op.num_products, method, error_bounds=bounds)
