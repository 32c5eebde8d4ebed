"""Deflated power iteration (the peers' method), with the same residual stopping rule as Lanczos."""

from __future__ import annotations

import torch

from alternet_pl.analysis.hessian._vectors import gaussian, orthogonalise
from alternet_pl.analysis.hessian.eigen import Which
from alternet_pl.analysis.hessian.operator import LinearOperatorLike
from alternet_pl.analysis.progress import progress
from alternet_pl.errors import InputError

__all__ = ["power_eigenpairs"]


def power_eigenpairs(
    op: LinearOperatorLike, k: int, which: Which, tol: float, max_iter: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """k eigenpairs by power iteration on (sign * H + shift * I), deflating the ones found.

    Returns (eigenvalues ascending, eigenvectors as columns, residuals, an estimate of ||H||).
    `max_iter` products per eigenvalue. Raises ValueError for which="BE".
    """
    shift, sign, rho = 0.0, 1.0, 0.0
    if which in ("LA", "SA", "BE"):
        if which == "BE":
            raise InputError("method='power' supports which='LA', 'SA', 'LM'; use method='lanczos' for 'BE'")
        rho = _power_loop(op, [], 1.0, 0.0, tol, max_iter, gen)[0]
        sign = 1.0 if which == "LA" else -1.0
        shift = abs(rho) * 1.01  # sign*H + shift*I is positive semi-definite: its top is H's LA/SA
    vals, vecs, res = [], [], []
    for _ in range(k):
        theta, v, r = _power_loop(op, vecs, sign, shift, tol, max_iter, gen)
        vals.append(sign * (theta - shift))
        vecs.append(v)
        res.append(r)
    vals_t = torch.tensor(vals, dtype=torch.float64)
    order = vals_t.argsort()
    norm = max(abs(rho), float(vals_t.abs().max()))
    return vals_t[order], torch.stack(vecs, 1)[:, order], torch.tensor(res, dtype=torch.float64)[order], norm


def _power_loop(
    op: LinearOperatorLike,
    found: list[torch.Tensor],
    sign: float,
    shift: float,
    tol: float,
    max_iter: int,
    gen: torch.Generator,
) -> tuple[float, torch.Tensor, float]:
    v = gaussian(op.size, gen, op.dtype, op.device)
    basis = torch.stack(found) if found else v.new_empty(0, op.size)
    theta, r = 0.0, float("inf")
    for _ in progress(range(max_iter), desc="power", total=max_iter):
        v = orthogonalise(v, basis)
        v = v / v.norm()
        w = sign * (op @ v) + shift * v
        theta = float(v @ w)
        r = float(orthogonalise(w - theta * v, basis).norm())
        if r <= tol * max(abs(theta - shift), torch.finfo(op.dtype).eps ** (2 / 3) * max(abs(theta), shift)):
            break
        v = w
    return theta, v, r
