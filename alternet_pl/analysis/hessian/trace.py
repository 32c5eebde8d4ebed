"""Trace estimates from Hessian-vector products: Hutchinson and Hutch++ (Meyer et al. 2021)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from alternet_pl.analysis.hessian._vectors import rademacher
from alternet_pl.analysis.hessian.adapters import CountingOperator, as_operator
from alternet_pl.analysis.hessian.operator import LinearOperatorLike
from alternet_pl.analysis.progress import progress
from alternet_pl.errors import InputError

__all__ = ["TRACE_METHODS", "TraceMethod", "TraceResult", "trace"]

TraceMethod = Literal["hutch++", "hutchinson"]
TRACE_METHODS: tuple[str, ...] = get_args(TraceMethod)


@dataclass(frozen=True)
class TraceResult:
    """A trace estimate and its standard error; unpacks as ``estimate, stderr = result``."""

    estimate: float
    stderr: float
    num_hvps: int
    method: str

    def __iter__(self) -> Iterator[float]:
        yield self.estimate
        yield self.stderr


def trace(
    op: LinearOperatorLike | Any, num_samples: int = 60, seed: int = 0, method: TraceMethod = "hutch++"
) -> TraceResult:
    """Trace of `op` and its standard error from `num_samples` products (Rademacher probes).

    "hutchinson": mean of z^T H z. "hutch++": a third of the products sketch the top subspace Q
    (trace of Q^T H Q is exact), a third apply H to Q, the rest run Hutchinson on the deflated rest;
    the standard error is that part's. With Q spanning everything it is exact.
    Raises ValueError for an unknown method or too few samples (hutchinson >= 2, hutch++ >= 4).
    """
    if method not in TRACE_METHODS:
        raise InputError(f"method={method!r}; choose one of {TRACE_METHODS}")
    need = 2 if method == "hutchinson" else 4
    if num_samples < need:
        raise InputError(f"trace({method}) needs num_samples >= {need}, got {num_samples}")
    op = CountingOperator(as_operator(op))
    gen = torch.Generator().manual_seed(seed)
    n, kw = op.size, dict(dtype=op.dtype, device=op.device)
    if method == "hutch++":
        s = num_samples // 3
        sketch = torch.stack([rademacher(n, gen, **kw) for _ in range(s)], 1)
        q = torch.linalg.qr(op @ sketch).Q
        exact = float(torch.einsum("ij,ij->", q, op @ q))
        probes = num_samples - 2 * s
    else:
        q, exact, probes = torch.empty(n, 0, **kw), 0.0, num_samples
    samples = []
    for _ in progress(range(probes), desc="trace", total=probes):
        z = rademacher(n, gen, **kw)
        z = z - q @ (q.T @ z)
        samples.append(float(z @ (op @ z)))
    t = torch.tensor(samples, dtype=torch.float64)
    return TraceResult(
        exact + float(t.mean()), float(t.std() / math.sqrt(len(samples))), op.num_products, method
    )
