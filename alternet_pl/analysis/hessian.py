"""Hessian of the mean loss: an exact Hessian-vector-product operator and the spectral algorithms.

The operator (`HessianOperator`) is the only code that touches the model; the algorithms
(`top_eigenvalues`, `trace`, `spectral_density`) only call ``op @ v``. Under torch.distributed the
operator all-reduces its batch-size-weighted sums, so every rank holds the Hessian of the mean loss
over the union of the ranks' batches and the (seeded, deterministic) algorithms agree on all ranks.

BatchNorm: ``mode="eval"`` (default, as PyHessian) uses the running statistics, so the loss is a sum
over samples and uneven batches give exactly the full-batch Hessian. ``mode="train"`` normalises with
each batch's own statistics (the training-time function) without updating the running statistics;
the loss then depends on how samples are grouped into batches. Dropout / drop-path are off in both.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm.auto import tqdm

from alternet_pl.analysis.dist import all_gather_objects, all_reduce_sum, check_same_batches, rank_and_world
from alternet_pl.analysis.state import map_tensors

WHICH = ("LA", "SA", "LM", "BE")
MODES = ("eval", "train")
WEIGHT_DECAY_FORMS = ("l2", "norm")


def _progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "") -> tqdm:
    quiet = not sys.stderr.isatty() or rank_and_world()[0] != 0
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=quiet)


def _select_params(model: nn.Module, params: Any) -> tuple[list[str], list[nn.Parameter]]:
    """Trainable parameters chosen by name prefix(es) and/or module(s); all trainable ones for None."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is None:
        chosen = named
    else:
        items = [params] if isinstance(params, str | nn.Module) else list(params)
        bad = [type(x).__name__ for x in items if not isinstance(x, str | nn.Module)]
        if bad:
            raise TypeError(f"params must be name prefixes (str) or nn.Modules, got {bad}")
        prefixes = [x.rstrip(".") for x in items if isinstance(x, str)]
        ids = {id(p) for x in items if isinstance(x, nn.Module) for p in x.parameters()}
        chosen = [
            (n, p) for n, p in named if id(p) in ids or any(n == s or n.startswith(s + ".") for s in prefixes)
        ]
    if not chosen:
        example = ", ".join(n for n, _ in named[:4]) or "none: the model has no trainable parameters"
        raise ValueError(f"no trainable parameters selected by params={params!r}; names look like: {example}")
    return [n for n, _ in chosen], [p for _, p in chosen]


def _cast_batch(batch: Any, dtype: torch.dtype) -> Any:
    """Floating tensors of a batch in the compute dtype (labels and masks untouched)."""
    return map_tensors(batch, lambda t: t.to(dtype) if t.is_floating_point() else t)


class HessianOperator:
    """``op @ v``: exact Hessian-vector product of the mean loss over all samples of ``batches``.

    Each batch's HVP (double backward) is weighted by its sample count, so uneven batches give the
    full-batch Hessian. Args:
        model, loss_fn: ``loss_fn(model, batch) -> (loss_mean, num_samples[, ...])``.
        batches: a list (or re-iterable) of batches; re-read on every product.
        params: None (all trainable), name prefix(es) and/or module(s): the block-wise Hessian.
        dtype: compute dtype; float64 upcasts the model's tensors for each product and back (exact).
        mode: "eval" or "train" BatchNorm statistics (module docstring).
        weight_decay, weight_decay_form: add the Hessian of a weight-decay term on the selected
            parameters: "l2" = 0.5 * wd * sum ||p||^2 (adds wd * I), "norm" = wd * sum ||p||_2 (the
            term the paper's official code adds to its loss-landscape loss; tensors with ||p|| = 0,
            where it has no second derivative, contribute nothing).
        distributed: all-reduce over ranks when torch.distributed is initialised. Each rank then
            passes its OWN shard of the data (e.g. ``batches[rank::world]``); the product is that of
            the union of the shards, identical on every rank.
        cache_graph: keep each batch's first-backward graph (forward + gradient with
            create_graph) between products, so every product after the first costs one backward
            pass per batch instead of forward + two backwards. Costs the memory of those graphs;
            needs the model already in ``dtype``. The cache is rebuilt if a weight changes.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        batches: Iterable,
        params: Any = None,
        dtype: torch.dtype = torch.float32,
        mode: str = "eval",
        weight_decay: float = 0.0,
        weight_decay_form: str = "l2",
        distributed: bool = True,
        cache_graph: bool = False,
    ) -> None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; choose one of {MODES}")
        if weight_decay_form not in WEIGHT_DECAY_FORMS:
            raise ValueError(f"weight_decay_form={weight_decay_form!r}; choose one of {WEIGHT_DECAY_FORMS}")
        self.model, self.loss_fn, self.batches = model, loss_fn, batches
        self.names, self.params = _select_params(model, params)
        bits = torch.finfo(dtype).bits
        tensors = [*model.named_parameters(), *model.named_buffers()]
        lossy = [
            (n, t.dtype) for n, t in tensors if t.is_floating_point() and torch.finfo(t.dtype).bits > bits
        ]
        if lossy:
            raise ValueError(
                f"dtype={dtype} is less precise than {lossy[0][0]} ({lossy[0][1]}); "
                "pass a dtype at least as precise as the model's"
            )
        if mode == "train" and any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
            raise ValueError(
                "mode='train' with SyncBatchNorm would sync statistics across ranks holding "
                "different batches; use mode='eval' or convert back to BatchNorm"
            )
        self.dtype, self.mode, self.distributed = dtype, mode, distributed
        if cache_graph:
            other = [n for n, t in tensors if t.is_floating_point() and t.dtype != dtype]
            if other:
                raise ValueError(
                    f"cache_graph=True needs the model in {dtype}, but {other[0]} is not; "
                    f"convert the model (e.g. model.to({dtype})) or pass cache_graph=False"
                )
        self.cache_graph = cache_graph
        self._cache: list[tuple[tuple, float]] | None = None
        self._cache_versions: list[int] = []
        self.weight_decay, self.weight_decay_form = float(weight_decay), weight_decay_form
        self.device = self.params[0].device
        self.shapes = [p.shape for p in self.params]
        self.size = sum(p.numel() for p in self.params)
        self.num_hvps = 0
        world = rank_and_world()[1] if distributed else 1
        if world == 1 and hasattr(batches, "__len__") and len(batches) == 0:
            raise ValueError("batches is empty; pass at least one (inputs, targets) batch")

    def __repr__(self) -> str:
        return (
            f"HessianOperator(size={self.size}, dtype={self.dtype}, mode={self.mode!r}, "
            f"num_hvps={self.num_hvps})"
        )

    @contextmanager
    def _context(self):
        """Eval (or BN-batch-statistics) mode, compute dtype, autocast off, double-backward attention."""
        model = self.model
        modes = [(m, m.training) for m in model.modules()]
        bn_flags = []
        model.eval()
        if self.mode == "train":
            for m in model.modules():
                if isinstance(m, _BatchNorm):  # batch statistics, running statistics untouched
                    bn_flags.append((m, m.track_running_stats))
                    m.train()
                    m.track_running_stats = False
        cast = [
            t
            for t in (*model.parameters(), *model.buffers())
            if t.is_floating_point() and t.dtype != self.dtype
        ]
        dtypes = [t.dtype for t in cast]
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
            for m, training in modes:
                m.training = training

    def _check_vector(self, v: Any) -> torch.Tensor:
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"op @ v needs a torch.Tensor, got {type(v).__name__}")
        if v.dtype != self.dtype:
            raise TypeError(
                f"op @ v: v has dtype {v.dtype} but the operator computes in {self.dtype}; "
                f"pass v.to({self.dtype})"
            )
        if v.ndim not in (1, 2) or v.shape[0] != self.size:
            raise ValueError(
                f"op @ v: v has shape {tuple(v.shape)}; expected ({self.size},) or "
                f"({self.size}, m): one entry per selected parameter"
            )
        return v.to(self.device)

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        v = self._check_vector(v)
        if v.ndim == 2:
            return torch.stack([self._matvec(c) for c in v.unbind(1)], dim=1)
        return self._matvec(v)

    matvec = __matmul__

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
        out = self.loss_fn(self.model, _cast_batch(batch, self.dtype))
        if not isinstance(out, tuple | list) or len(out) < 2:
            raise TypeError(
                f"loss_fn must return (loss_mean, num_samples[, num_correct]), got {type(out).__name__}"
            )
        loss, num = out[0], float(out[1])
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar mean loss, got {shape}; reduce it with .mean()")
        if num <= 0:
            return None
        if not loss.requires_grad:
            raise ValueError(
                "the loss has no autograd graph (computed under torch.no_grad() or detached?); "
                "compute it with gradients enabled"
            )
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        if not any(g is not None and g.grad_fn is not None for g in grads):
            raise ValueError(
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

    def _batch_products(self, vs: list[torch.Tensor]):
        """Yield (num * H_batch v, num) per non-empty batch, from the cached graphs when enabled."""
        if not self.cache_graph:
            for batch in self.batches:
                out = self._batch_grads(batch)
                if out is not None:
                    yield self._grads_hvp(*out, vs), out[1]
            return
        versions = [p._version for p in self.params]
        if self._cache is None or versions != self._cache_versions:
            self._cache = [out for batch in self.batches if (out := self._batch_grads(batch)) is not None]
            self._cache_versions = versions
        for grads, num in self._cache:
            yield self._grads_hvp(grads, num, vs), num

    def clear_cache(self) -> None:
        """Free the cached graphs (``cache_graph=True``)."""
        self._cache = None

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(self.size + 1, dtype=self.dtype, device=self.device)  # [sum n*Hv, sum n]
        with self._context():
            vs = self._split(v)
            for hv, num in self._batch_products(vs):
                total[:-1] += hv
                total[-1] += num
            if self.distributed:
                all_reduce_sum(total)
            if total[-1] <= 0:
                raise ValueError(
                    "batches yielded no samples (empty list, or a one-shot generator read "
                    "twice); pass a list of batches"
                )
            result = total[:-1] / total[-1]
            if self.weight_decay:
                result = result + self._weight_decay_hvp(vs)
        self.num_hvps += 1
        if not bool(torch.isfinite(result).all()):
            raise FloatingPointError(
                "the Hessian-vector product is not finite: the loss or the model diverged "
                "(check the loss at these weights), or run with dtype=torch.float64"
            )
        return result

    def _weight_decay_hvp(self, vs: list[torch.Tensor]) -> torch.Tensor:
        wd = self.weight_decay
        if self.weight_decay_form == "l2":
            return wd * torch.cat([u.reshape(-1) for u in vs])
        out = []
        for p, u in zip(self.params, vs):  # Hessian of wd*||p|| = wd/||p|| * (I - p p^T / ||p||^2)
            p = p.detach().to(self.dtype)
            norm = p.norm()
            if norm == 0:  # ||p|| is not twice differentiable at 0: no curvature term for that tensor
                out.append(torch.zeros_like(u).reshape(-1))
                continue
            out.append((wd / norm * (u - p * (p * u).sum() / norm**2)).reshape(-1))
        return torch.cat(out)


# ---- eigenvalues -----------------------------------------------------------------------------------
@dataclass
class EigenResult:
    """Eigenpairs sorted ascending (as scipy's eigsh); unpacks as ``vals, vecs = result``.

    residuals: ``||H x - theta x||`` per pair (|lambda - theta| <= residual for some eigenvalue lambda).
    """

    eigenvalues: torch.Tensor  # (k,) float64, ascending
    eigenvectors: torch.Tensor  # (n, k) columns, operator dtype
    residuals: torch.Tensor  # (k,) float64
    converged: bool
    num_hvps: int
    method: str

    def __iter__(self):
        yield self.eigenvalues
        yield self.eigenvectors


def _rademacher(n: int, gen: torch.Generator, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(dtype=dtype, device=device)


def _gaussian(n: int, gen: torch.Generator, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.randn(n, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)


def _orthogonalise(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Classical Gram-Schmidt twice ("twice is enough") against the rows of `basis`."""
    if basis.shape[0]:
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
    return w


def _lanczos(
    op: HessianOperator,
    q: torch.Tensor,
    steps: int,
    gen: torch.Generator,
    stop: Callable[[list, list], bool] | None = None,
    desc: str = "lanczos",
):
    """Lanczos with full reorthogonalisation; returns (alphas, betas, Q rows). betas[-1] is the residual norm.

    A (near) breakdown restarts from a random vector orthogonal to the basis (coupling beta set to 0).
    """
    steps = min(steps, op.size)
    basis = torch.empty(min(steps, 16), op.size, dtype=op.dtype, device=op.device)  # grows by doubling
    alphas: list[float] = []
    betas: list[float] = []
    eps = torch.finfo(op.dtype).eps
    q = q / q.norm()
    for j in _progress(range(steps), total=steps, desc=desc):
        if j == basis.shape[0]:
            basis = torch.cat(
                [basis, torch.empty(min(j, steps - j), op.size, dtype=op.dtype, device=op.device)]
            )
        basis[j] = q
        w = op @ q
        alpha = float(q @ w)
        w = _orthogonalise(w - alpha * q - (betas[-1] * basis[j - 1] if j else 0.0), basis[: j + 1])
        beta = float(w.norm())
        alphas.append(alpha)
        betas.append(beta)
        if j + 1 == steps or (stop is not None and stop(alphas, betas)):
            break
        scale = max(abs(a) for a in alphas) + max(betas)
        if beta <= 100 * eps * scale:  # invariant subspace: exact Ritz values; restart orthogonally
            betas[-1] = 0.0
            w = _orthogonalise(_gaussian(op.size, gen, op.dtype, op.device), basis[: j + 1])
            q = w / w.norm()
        else:
            q = w / beta
    return alphas, betas, basis[: len(alphas)]


def _tridiag_eigh(alphas: list[float], betas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.tensor(alphas, dtype=torch.float64)
    b = torch.tensor(betas[:-1], dtype=torch.float64)
    return torch.linalg.eigh(torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1))


def _pick(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    """Indices of the wanted Ritz values (theta ascending)."""
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


def _converged(vals: torch.Tensor, res: torch.Tensor, norm: float, tol: float, dtype: torch.dtype) -> bool:
    """res <= tol * max(|theta|, eps^(2/3) ||H||): ARPACK's rule, its guard for eigenvalues near zero."""
    floor = torch.finfo(dtype).eps ** (2 / 3) * norm
    return bool((res <= tol * vals.abs().clamp_min(floor)).all())


def _check_eig_args(op: HessianOperator, k: int, which: str, tol: float, max_iter: int, method: str) -> None:
    if which not in WHICH:
        raise ValueError(f"which={which!r}; choose one of {WHICH} (scipy eigsh's convention)")
    if method not in ("lanczos", "power"):
        raise ValueError(f"method={method!r}; choose 'lanczos' or 'power'")
    if not 1 <= k <= op.size:
        raise ValueError(f"k={k} must be between 1 and the number of selected parameters ({op.size})")
    if max_iter < k and method == "lanczos":
        raise ValueError(f"max_iter={max_iter} < k={k}: Lanczos needs at least k steps; raise max_iter")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")


def top_eigenvalues(
    op: HessianOperator,
    k: int = 1,
    which: str = "LA",
    tol: float = 1e-4,
    max_iter: int = 100,
    method: str = "lanczos",
    seed: int = 0,
) -> EigenResult:
    """k extreme eigenpairs of `op` (scipy eigsh's `which` and ascending order).

    Converged when every wanted pair's residual <= tol * max(|theta|, eps^(2/3) * ||H||), which bounds
    the relative eigenvalue error by tol. Lanczos (default): full reorthogonalisation, stops as soon as
    that holds, at most `max_iter` HVPs in all. Power: deflated power iteration (the peers' method,
    `max_iter` HVPs per eigenvalue; LA/SA via a spectral shift). A non-converged run warns with its
    residuals and returns ``converged=False``.
    """
    _check_eig_args(op, k, which, tol, max_iter, method)
    gen = torch.Generator().manual_seed(seed)
    start = op.num_hvps
    if method == "power":
        vals, vecs, res, norm = _power(op, k, which, tol, max_iter, gen)
    else:

        def converged(alphas: list, betas: list) -> bool:
            if len(alphas) < k:
                return False
            theta, s = _tridiag_eigh(alphas, betas)
            idx = _pick(theta, k, which)
            res = (betas[-1] * s[-1, idx]).abs()
            return _converged(theta[idx], res, float(theta.abs().max()), tol, op.dtype)

        q0 = _gaussian(op.size, gen, op.dtype, op.device)
        alphas, betas, basis = _lanczos(op, q0, max_iter, gen, stop=converged, desc=f"lanczos {which}")
        theta, s = _tridiag_eigh(alphas, betas)
        idx = _pick(theta, k, which)
        vals, res = theta[idx], (betas[-1] * s[-1, idx]).abs()
        vecs = basis.T @ s[:, idx].to(op.dtype).to(op.device)
        norm = float(theta.abs().max())
    ok = len(vals) == k and _converged(vals, res, norm, tol, op.dtype)
    if not ok:
        warnings.warn(
            f"top_eigenvalues({method}, which={which}) did not converge in {op.num_hvps - start} HVPs: "
            f"eigenvalues {vals.tolist()} have residuals {res.tolist()} > tol={tol} (relative); "
            "raise max_iter or tol",
            RuntimeWarning,
            stacklevel=2,
        )
    return EigenResult(vals, vecs, res, ok, op.num_hvps - start, method)


def _power(op: HessianOperator, k: int, which: str, tol: float, max_iter: int, gen: torch.Generator):
    """Deflated power iteration on (sign * H + shift * I); residual stopping rule as Lanczos."""
    shift, sign, rho = 0.0, 1.0, 0.0
    if which in ("LA", "SA", "BE"):
        if which == "BE":
            raise ValueError("method='power' supports which='LA', 'SA', 'LM'; use method='lanczos' for 'BE'")
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


def _power_loop(op, found, sign, shift, tol, max_iter, gen):
    v = _gaussian(op.size, gen, op.dtype, op.device)
    basis = torch.stack(found) if found else v.new_empty(0, op.size)
    theta, r = 0.0, float("inf")
    for _ in _progress(range(max_iter), total=max_iter, desc="power"):
        v = _orthogonalise(v, basis)
        v = v / v.norm()
        w = sign * (op @ v) + shift * v
        theta = float(v @ w)
        r = float(_orthogonalise(w - theta * v, basis).norm())
        if r <= tol * max(abs(theta - shift), torch.finfo(op.dtype).eps ** (2 / 3) * max(abs(theta), shift)):
            break
        v = w
    return theta, v, r


# ---- trace and density -------------------------------------------------------------------------------
def trace(
    op: HessianOperator, num_samples: int = 60, seed: int = 0, method: str = "hutch++"
) -> tuple[float, float]:
    """Trace estimate and its standard error from `num_samples` HVPs (Rademacher probes).

    "hutchinson": mean of z^T H z. "hutch++" (Meyer et al. 2021): a third of the HVPs sketch the top
    subspace Q (trace of Q^T H Q is exact), a third apply H to Q, the rest run Hutchinson on the
    deflated rest; the standard error is that part's. With Q spanning everything it is exact.
    """
    if method not in ("hutchinson", "hutch++"):
        raise ValueError(f"method={method!r}; choose 'hutchinson' or 'hutch++'")
    need = 2 if method == "hutchinson" else 4
    if num_samples < need:
        raise ValueError(f"trace({method}) needs num_samples >= {need}, got {num_samples}")
    gen = torch.Generator().manual_seed(seed)
    n, kw = op.size, dict(dtype=op.dtype, device=op.device)
    if method == "hutch++":
        s = num_samples // 3
        sketch = torch.stack([_rademacher(n, gen, **kw) for _ in range(s)], 1)
        q = torch.linalg.qr(op @ sketch).Q
        exact = float(torch.einsum("ij,ij->", q, op @ q))
        probes = num_samples - 2 * s
    else:
        q, exact, probes = torch.empty(n, 0, **kw), 0.0, num_samples
    samples = []
    for _ in _progress(range(probes), total=probes, desc="trace"):
        z = _rademacher(n, gen, **kw)
        z = z - q @ (q.T @ z)
        samples.append(float(z @ (op @ z)))
    t = torch.tensor(samples, dtype=torch.float64)
    return exact + float(t.mean()), float(t.std() / math.sqrt(len(samples)))


def spectral_density(
    op: HessianOperator, num_runs: int = 1, num_steps: int = 64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stochastic Lanczos quadrature: Ritz nodes and weights (1-D, float64, weights sum to 1).

    Each run starts from a normalised Rademacher vector v and contributes the Ritz values of its
    `num_steps`-step Lanczos tridiagonal with weights (first eigenvector components)^2 / num_runs, a
    Gauss quadrature exact for v^T p(H) v / n with deg p <= 2 * num_steps - 1.
    """
    if num_runs < 1 or num_steps < 1:
        raise ValueError(f"num_runs and num_steps must be >= 1, got {num_runs}, {num_steps}")
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for _ in range(num_runs):
        v = _rademacher(op.size, gen, dtype=op.dtype, device=op.device)
        alphas, betas, _ = _lanczos(op, v, num_steps, gen, desc="slq")
        theta, s = _tridiag_eigh(alphas, betas)
        nodes.append(theta)
        weights.append(s[0] ** 2 / num_runs)
    return torch.cat(nodes), torch.cat(weights)


def smoothed_density(nodes: Any, weights: Any, grid: Any, sigma: float | None = None) -> torch.Tensor:
    """Gaussian-smoothed density sum_i w_i N(grid; node_i, sigma^2) (sigma: 1% of the node range if None)."""
    nodes, weights, grid = (
        torch.as_tensor(x, dtype=torch.float64).reshape(-1) for x in (nodes, weights, grid)
    )
    if sigma is None:
        sigma = max(float(nodes.max() - nodes.min()) * 0.01, 1e-12)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    z = (grid[:, None] - nodes[None, :]) / sigma
    return (weights[None, :] * torch.exp(-0.5 * z**2)).sum(1) / (sigma * math.sqrt(2 * math.pi))


# ---- the paper's per-mini-batch spectrum ------------------------------------------------------------
def max_eigenvalue_spectrum(
    model: nn.Module,
    loss_fn: Callable,
    batches: Iterable,
    k: int = 1,
    which: str = "LA",
    *,
    params: Any = None,
    dtype: torch.dtype = torch.float32,
    mode: str = "eval",
    tol: float = 1e-3,
    max_iter: int = 100,
    weight_decay: float = 0.0,
    weight_decay_form: str = "l2",
    shard: bool = True,
    seed: int = 0,
    cache_graph: bool = False,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k eigenvalues (ascending) of each mini-batch's Hessian: tensor[num_batches, k], float64.

    The paper's "Hessian max eigenvalue spectrum" is k=5, which="LM" on augmented training batches
    with the weight-decay term. Under torch.distributed with `shard`, rank r handles batches[r::world]
    and the rows are gathered, so every rank returns the same full tensor. With `return_info`, also
    the Ritz residuals ||H x - theta x|| of every value (same shape) and each batch's converged flag
    (tensor[num_batches] of bool), to see which batches did not converge within `max_iter`.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty; pass at least one (inputs, targets) batch")
    rank, world = rank_and_world() if shard else (0, 1)
    if world > 1:
        check_same_batches(batches, "max_eigenvalue_spectrum")
    rows = {}
    for i in _progress(range(rank, len(batches), world), desc="spectrum"):
        op = HessianOperator(
            model,
            loss_fn,
            [batches[i]],
            params=params,
            dtype=dtype,
            mode=mode,
            weight_decay=weight_decay,
            weight_decay_form=weight_decay_form,
            distributed=False,
            cache_graph=cache_graph,
        )
        result = top_eigenvalues(op, k, which, tol=tol, max_iter=max_iter, seed=seed + i)
        rows[i] = (result.eigenvalues, result.residuals, result.converged)
    for part in all_gather_objects(rows) if world > 1 else [rows]:
        rows.update(part)
    values = torch.stack([rows[i][0] for i in range(len(batches))])
    if return_info:
        residuals = torch.stack([rows[i][1] for i in range(len(batches))])
        return values, residuals, torch.tensor([rows[i][2] for i in range(len(batches))])
    return values
