"""Spectral density by stochastic Lanczos quadrature, and its Gaussian smoothing for plots."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from alternet_pl.analysis.hessian._vectors import rademacher
from alternet_pl.analysis.hessian.adapters import CountingOperator, as_operator
from alternet_pl.analysis.hessian.lanczos import lanczos, tridiagonal_eigh
from alternet_pl.analysis.hessian.operator import LinearOperatorLike
from alternet_pl.errors import InputError

__all__ = ["DensityResult", "smoothed_density", "spectral_density"]


@dataclass(frozen=True, eq=False)
class DensityResult:
    """Ritz nodes and quadrature weights (1-D, float64, weights sum to 1); unpacks as
    ``nodes, weights = result``."""

    nodes: torch.Tensor
    weights: torch.Tensor
    num_hvps: int

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield self.nodes
        yield self.weights

    def smoothed(self, grid: Any, sigma: float | None = None) -> torch.Tensor:
        """`smoothed_density` of these nodes and weights on `grid`."""
        return smoothed_density(self.nodes, self.weights, grid, sigma)


def spectral_density(
    op: LinearOperatorLike | Any, num_runs: int = 1, num_steps: int = 64, seed: int = 0
) -> DensityResult:
    """Stochastic Lanczos quadrature over `num_runs` runs of `num_steps` Lanczos steps each.

    Each run starts from a normalised Rademacher vector v and contributes the Ritz values of its
    tridiagonal with weights (first eigenvector components)^2 / num_runs, a Gauss quadrature exact
    for v^T p(H) v / n with deg p <= 2 * num_steps - 1. Raises ValueError for runs or steps < 1.
    """
    if num_runs < 1 or num_steps < 1:
        raise InputError(f"num_runs and num_steps must be >= 1, got {num_runs}, {num_steps}")
    op = CountingOperator(as_operator(op))
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for _ in range(num_runs):
        v = rademacher(op.size, gen, dtype=op.dtype, device=op.device)
        alphas, betas, _ = lanczos(op, v, num_steps, gen, desc="slq")
        theta, s = tridiagonal_eigh(alphas, betas)
        nodes.append(theta)
        weights.append(s[0] ** 2 / num_runs)
    return DensityResult(torch.cat(nodes), torch.cat(weights), op.num_products)


def smoothed_density(nodes: Any, weights: Any, grid: Any, sigma: float | None = None) -> torch.Tensor:
    """Gaussian-smoothed density sum_i w_i N(grid; node_i, sigma^2) on `grid` (float64).

    sigma: 1% of the node range if None. Raises ValueError for sigma <= 0.
    """
    nodes, weights, grid = (
        torch.as_tensor(x, dtype=torch.float64).reshape(-1) for x in (nodes, weights, grid)
    )
    if sigma is None:
        sigma = max(float(nodes.max() - nodes.min()) * 0.01, 1e-12)
    if sigma <= 0:
        raise InputError(f"sigma must be > 0, got {sigma}")
    z = (grid[:, None] - nodes[None, :]) / sigma
    return (weights[None, :] * torch.exp(-0.5 * z**2)).sum(1) / (sigma * math.sqrt(2 * math.pi))
