"""Random probes and Gram-Schmidt shared by the algorithms (private)."""

from __future__ import annotations

import torch


def rademacher(n: int, gen: torch.Generator, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """n random signs, drawn on the CPU generator (identical on every device and rank)."""
    return (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(dtype=dtype, device=device)


def gaussian(n: int, gen: torch.Generator, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """n standard normal numbers, drawn in float64 on the CPU generator."""
    return torch.randn(n, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)


def orthogonalise(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Classical Gram-Schmidt twice ("twice is enough") against the rows of `basis`."""
    if basis.shape[0]:
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
    return w
