"""`HessianOperator`: ``op @ v`` is the exact Hessian-vector product of the mean loss, and nothing else.

`LinearOperatorLike` is what every algorithm of this package accepts: anything with ``size``,
``dtype``, ``device`` and ``@`` (this operator, a dense-matrix wrapper, a scipy `LinearOperator`
behind a small adapter, a curvlinops operator).

BatchNorm: ``mode="eval"`` (default, as PyHessian) uses the running statistics, so the loss is a sum
over samples and uneven batches give exactly the full-batch Hessian. ``mode="train"`` normalises with
each batch's own statistics (the training-time function) without updating the running statistics;
the loss then depends on how samples are grouped into batches. Dropout / drop-path are off in both.
Attention runs under the math SDPA kernel (the fused CPU kernels have no double backward).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.batchnorm import _BatchNorm

from alternet_pl.analysis.params import ParamSelection, trainable_parameters
from alternet_pl.analysis.state import eval_mode, map_tensors
from alternet_pl.errors import InputError

__all__ = ["MODES", "BatchNormMode", "HessianOperator", "LinearOperatorLike"]

BatchNormMode = Literal["eval", "train"]
MODES: tuple[str, ...] = get_args(BatchNormMode)


@runtime_checkable
class LinearOperatorLike(Protocol):
    """A symmetric n x n operator: ``op @ v`` for v of shape (n,) or (n, m) in ``dtype`` on ``device``."""

    size: int
    dtype: torch.dtype
    device: torch.device

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor: ...


class HessianOperator:
    """``op @ v``: exact Hessian-vector product of the mean loss over all samples of ``batches``.

    Each batch's HVP (double backward) is weighted by its sample count, so uneven batches give the
    full-batch Hessian. Under torch.distributed use `DistributedHessianOperator` (each rank passes
    its own shard; the products are those of the union).

    Args:
        model, loss_fn: ``loss_fn(model, batch) -> (loss_mean, num_samples[, ...])``; wrap it in
            `WeightDecayLoss` for the Hessian of a weight-decay term too.
        batches: a list (or re-iterable) of batches; re-read on every product.
        params: None (all trainable), name prefix(es) and/or module(s): the block-wise Hessian.
        dtype: compute dtype; None (default) is the model's own. A more precise one (float64 on a
            float32 model) upcasts the model's tensors for each product and back (exact round trip).
        mode: "eval" or "train" BatchNorm statistics (module docstring).
        cache_graph: keep each batch's first-backward graph between products, so every product
            after the first costs one backward pass per batch instead of forward + two backwards.
            Costs the memory of those graphs and one copy of the model's tensors; needs the model
            already in ``dtype``. See `clear_cache` for when the cache is rebuilt.
    Raises:
        TypeError for a non-floating dtype; ValueError for an unknown mode, a dtype less precise than
        the model, cache_graph with a cast, mode="train" with SyncBatchNorm, or an empty batch list.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        batches: Iterable,
        params: ParamSelection = None,
        dtype: torch.dtype | None = None,
        mode: BatchNormMode = "eval",
        cache_graph: bool = False,
    ) -> None:
        selected = trainable_parameters(model, params)
        self.names, self.params = list(selected), list(selected.values())
        tensors = [*model.named_parameters(), *model.named_buffers()]
        floating = [(n, t) for n, t in tensors if t.is_floating_point()]
        if dtype is None:
            dtype = self.params[0].dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
        if mode not in MODES:
            raise InputError(f"mode={mode!r}; choose one of {MODES}")
        bits = torch.finfo(dtype).bits
        lossy = [(n, t.dtype) for n, t in floating if torch.finfo(t.dtype).bits > bits]
        if lossy:
            raise InputError(
                f"dtype={dtype} is less precise than {lossy[0][0]} ({lossy[0][1]}); "
                "pass a dtype at least as precise as the model's, or dtype=None (the model's own)"
            )
        if mode == "train" and any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
            raise InputError(
                "mode='train' with SyncBatchNorm would sync statistics across ranks holding "
                "different batches; use mode='eval' or convert back to BatchNorm"
            )
        if cache_graph:
            other = [n for n, t in floating if t.dtype != dtype]
            if other:
                raise InputError(
                    f"cache_graph=True needs the model in {dtype}, but {other[0]} is not; "
                    f"convert the model (e.g. model.to({dtype})) or pass cache_graph=False"
                )
        if hasattr(batches, "__len__") and len(batches) == 0 and not self._allows_empty():
            raise InputError("batches is empty; pass at least one (inputs, targets) batch")
        self.model, self.loss_fn, self.batches = model, loss_fn, batches
        self.dtype, self.mode, self.cache_graph = dtype, mode, cache_graph
        self.device = self.params[0].device
        self.shapes = [p.shape for p in self.params]
        self.size = sum(p.numel() for p in self.params)
        self.num_hvps = 0
        self._cache: list[tuple[tuple, float]] | None = None
        self._cache_key: list[torch.Tensor] = []

    def _allows_empty(self) -> bool:
        """Whether an empty local batch list is fine (a rank may hold no shard under DDP)."""
        return False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, dtype={self.dtype}, mode={self.mode!r}, "
            f"num_hvps={self.num_hvps})"
        )

    # ---- the product ----------------------------------------------------------------------------
    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        """H v for v of shape (size,) or H V for (size, m), in the operator's dtype and device.

        Raises TypeError / ValueError for a vector of the wrong type, dtype or shape, ValueError for
        a loss_fn that does not return a scalar mean with a graph, FloatingPointError for a
        non-finite product."""
        v = self._check_vector(v)
        if v.ndim == 2:
            return torch.stack([self._product(c) for c in v.unbind(1)], dim=1)
        return self._product(v)

    def _product(self, v: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(self.size + 1, dtype=self.dtype, device=self.device)  # [sum n*Hv, sum n]
        with self._context():
            vs = self._split(v)
            for hv, num in self._batch_products(vs):
                total[:-1] += hv
                total[-1] += num
            self._reduce(total)
        if total[-1] <= 0:
            raise InputError(
                "batches yielded no samples (empty list, or a one-shot generator read "
                "twice); pass a list of batches"
            )
        result = total[:-1] / total[-1]
        self.num_hvps += 1
        if not bool(torch.isfinite(result).all()):
            raise FloatingPointError(
                "the Hessian-vector product is not finite: the loss or the model diverged "
                "(check the loss at these weights), or run with dtype=torch.float64"
            )
        return result

    def _reduce(self, total: torch.Tensor) -> None:
        """Combine the [sum n*Hv, sum n] of all processes in place; one process: nothing to do."""

    @contextmanager
    def _context(self) -> Iterator[None]:
        """Eval (or BN-batch-statistics) mode, compute dtype, autocast off, double-backward attention."""
        model = self.model
        cast = [
            t
            for t in (*model.parameters(), *model.buffers())
            if t.is_floating_point() and t.dtype != self.dtype
        ]
        dtypes = [t.dtype for t in cast]
        with eval_mode(model):
            bn_flags = []
            if self.mode == "train":
                for m in model.modules():
                    if isinstance(m, _BatchNorm):  # batch statistics, running statistics untouched
                        bn_flags.append((m, m.track_running_stats))
                        m.train()
                        m.track_running_stats = False
            for t in cast:  # upcast in place (exact round trip; .grad and identities untouched)
                t.data = t.data.to(self.dtype)
            try:
                with torch.autocast(self.device.type, enabled=False), sdpa_kernel(SDPBackend.MATH):
                    yield
            finally:
                for t, d in zip(cast, dtypes):
                    t.data = t.data.to(d)
                for m, flag in bn_flags:
                    m.track_running_stats = flag

    def _check_vector(self, v: Any) -> torch.Tensor:
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"op @ v needs a torch.Tensor, got {type(v).__name__}")
        if v.dtype != self.dtype:
            raise TypeError(
                f"op @ v: v has dtype {v.dtype} but the operator computes in {self.dtype}; "
                f"pass v.to({self.dtype})"
            )
        if v.ndim not in (1, 2) or v.shape[0] != self.size:
            raise InputError(
                f"op @ v: v has shape {tuple(v.shape)}; expected ({self.size},) or "
                f"({self.size}, m): one entry per selected parameter"
            )
        return v.to(self.device)

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [t.view(s) for t, s in zip(flat.split([math.prod(s) for s in self.shapes]), self.shapes)]

    def _flat(self, tensors: Sequence[torch.Tensor | None]) -> torch.Tensor:
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        return torch.cat(
            [
                (zero.expand(s) if t is None else t.to(self.dtype)).reshape(-1)
                for t, s in zip(tensors, self.shapes)
            ]
        )

    def _batch_grads(self, batch: Any) -> tuple[tuple, float] | None:
        """Forward and gradient with ``create_graph``: the first half of a product (None: empty batch)."""
        batch = map_tensors(batch, lambda t: t.to(self.dtype) if t.is_floating_point() else t)
        out = self.loss_fn(self.model, batch)
        if not isinstance(out, tuple | list) or len(out) < 2:
            raise TypeError(
                f"loss_fn must return (loss_mean, num_samples[, num_correct]), got {type(out).__name__}"
            )
        loss, num = out[0], float(out[1])
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise InputError(f"loss_fn must return a scalar mean loss, got {shape}; reduce it with .mean()")
        if num <= 0:
            return None
        if not loss.requires_grad:
            raise InputError(
                "the loss has no autograd graph (computed under torch.no_grad() or detached?); "
                "compute it with gradients enabled"
            )
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        if not any(g is not None and g.grad_fn is not None for g in grads):
            raise InputError(
                "the gradient has no second-derivative path (no grad_fn): the loss is linear in "
                "the selected parameters, or the model detaches / uses a once-differentiable op"
            )
        return grads, num

    def _grads_hvp(self, grads: tuple, num: float, vs: list[torch.Tensor]) -> torch.Tensor:
        """The second half: differentiate grad . v once more; returns num * H_batch v (flat)."""
        dot = sum((g * u).sum() for g, u in zip(grads, vs) if g is not None and g.grad_fn is not None)
        try:
            hv = torch.autograd.grad(dot, self.params, allow_unused=True, retain_graph=self.cache_graph)
        except RuntimeError as err:
            raise RuntimeError(
                f"double backward failed ({err}); the model uses an op without a second "
                "derivative: replace it or run it in a double-backward-capable mode"
            ) from err
        return self._flat(hv) * num

    # ---- the graph cache ------------------------------------------------------------------------
    def _batch_products(self, vs: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, float]]:
        """Yield (num * H_batch v, num) per non-empty batch, from the cached graphs when enabled."""
        if not self.cache_graph:
            for batch in self.batches:
                out = self._batch_grads(batch)
                if out is not None:
                    yield self._grads_hvp(*out, vs), out[1]
            return
        if self._cache is None or not self._weights_unchanged():
            self._cache = None  # free the old graphs before building new ones
            self._cache_key = [t.detach().clone() for t in self._cache_tensors()]
            self._cache = [out for batch in self.batches if (out := self._batch_grads(batch)) is not None]
        for grads, num in self._cache:
            yield self._grads_hvp(grads, num, vs), num

    def _cache_tensors(self) -> list[torch.Tensor]:
        """Everything the cached graphs were built from, besides the batches: all parameters (also
        the unselected ones, which still shape the loss) and all floating buffers (BN statistics)."""
        model = self.model
        return [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]

    def _weights_unchanged(self) -> bool:
        """Exact comparison with the copy taken when the cache was built (one host sync in all)."""
        now = self._cache_tensors()
        key = self._cache_key
        if len(now) != len(key) or any(a.shape != b.shape for a, b in zip(now, key)):
            return False
        return not now or bool(torch.stack([(a == b).all() for a, b in zip(now, key)]).all())

    def clear_cache(self) -> None:
        """Free the cached graphs (``cache_graph=True``); the next product rebuilds them.

        The cache is also rebuilt by itself whenever a parameter or floating buffer of the model
        differs from the copy taken when it was built (compared exactly, every product). Call this
        after changing the batches in place, which the operator cannot see."""
        self._cache = None
        self._cache_key = []
