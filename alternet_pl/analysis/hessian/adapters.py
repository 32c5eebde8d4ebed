"""`as_operator`: what the algorithms call on their input, so that besides a `HessianOperator` they
take a dense matrix, a scipy `LinearOperator` or anything with a square ``shape`` and ``@``; and
`CountingOperator`, which counts the products an algorithm makes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from alternet_pl.analysis.hessian.operator import LinearOperatorLike
from alternet_pl.errors import InputError

__all__ = ["CountingOperator", "DenseOperator", "as_operator"]


class DenseOperator:
    """A symmetric matrix as a `LinearOperatorLike` (references in tests, small problems)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not matrix.is_floating_point():
            raise InputError(f"DenseOperator needs a square floating matrix, got {tuple(matrix.shape)}")
        self.matrix = matrix
        self.size, self.dtype, self.device = matrix.shape[0], matrix.dtype, matrix.device

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        return self.matrix @ v


class _ShapedOperator:
    """An object with a square ``shape`` and ``@`` (scipy LinearOperator: NumPy in and out)."""

    def __init__(self, op: Any) -> None:
        self.op, self.size = op, int(op.shape[0])
        dtype = getattr(op, "dtype", torch.float64)
        self._numpy = not isinstance(dtype, torch.dtype)
        self.dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype if self._numpy else dtype
        self.device = torch.device(getattr(op, "device", "cpu"))

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        if self._numpy:
            return torch.as_tensor(np.asarray(self.op @ v.detach().cpu().numpy()), device=self.device)
        return self.op @ v


class CountingOperator:
    """Wraps an operator and counts its products (a (n, m) block counts m)."""

    def __init__(self, op: LinearOperatorLike) -> None:
        self.op, self.num_products = op, 0
        self.size, self.dtype, self.device = op.size, op.dtype, op.device

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        self.num_products += 1 if v.ndim == 1 else v.shape[1]
        return self.op @ v


def as_operator(op: Any) -> LinearOperatorLike:
    """`op` itself when it has ``size``, ``dtype``, ``device`` and ``@``; a wrapper for a square torch
    matrix or an object with a square ``shape`` and ``@`` (scipy / curvlinops linear operators).
    Raises TypeError for anything else."""
    if isinstance(op, torch.Tensor):
        return DenseOperator(op)
    if isinstance(op, LinearOperatorLike) and isinstance(op.size, int):
        return op
    shape = getattr(op, "shape", None)
    if shape is not None and len(shape) == 2 and shape[0] == shape[1] and hasattr(op, "__matmul__"):
        return _ShapedOperator(op)
    raise TypeError(
        f"{type(op).__name__} is not a linear operator: pass a HessianOperator, a square torch matrix, "
        "or an object with size, dtype, device and @ (or a square shape and @, as scipy's LinearOperator)"
    )
