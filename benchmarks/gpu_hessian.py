"""The GPU benchmark's Hessian rows for one full-size model at batch 128: the products' relative error,
their time over a gradient's, their peak and retained memory over a gradient's.

Like for like: every gradient and product runs the math attention kernel (double backward needs it;
the gradient row with the fused kernel is its own row); PyHessian's product is timed against our
cached product with both graphs held, and its graphs (on the parameters' `.grad`) are freed before
anything else is measured. "Held between products" is what stays allocated while the operator (or
PyHessian's object) is alive and the returned vector is gone: the retained graph.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.gpu_plan import tally
from benchmarks.hessian_suite import forward_over_reverse, our_operator
from benchmarks.table import Row, interleaved, ratios

__all__ = ["error_rows", "time_rows", "memory_rows", "tf32", "TF32Setting"]

TF32Setting = Literal["off", "default", "on"]
TF32_FLAGS = {"off": (False, False), "default": (False, True), "on": (True, True)}  # (matmul, cuDNN)
TF32_LABEL = {
    "off": "fp32, TF32 off",
    "default": "torch's default (TF32 in cuDNN convolutions only)",
    "on": "TF32 on in matmuls and convolutions (as this benchmark times)",
}


@contextmanager
def tf32(setting: TF32Setting) -> Iterator[None]:
    """TF32 for matmuls and cuDNN as `setting` says, restored afterwards."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = TF32_FLAGS[setting]
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def build(name: str, batch_size: int, device: str) -> tuple[nn.Module, tuple]:
    """The seeded model (eval mode, 100 classes) and one seeded batch of CIFAR-sized images."""
    import timm

    import alternet_pl.models  # noqa: F401

    tally("build", name)
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=100).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 100, (batch_size,), generator=gen).to(device)
    return model, (x, y)


def counted(unit: str, name: str, fn: Callable[[], object]) -> Callable[[], object]:
    def call() -> object:
        tally(unit, name)
        return fn()

    return call


def pyhessian_missing() -> str:
    """Why PyHessian cannot be used ('' when it can)."""
    try:
        import pyhessian  # noqa: F401
    except ImportError as err:
        return f"PyHessian not importable ({err}); put `benchmarks/gpu.sh --prepare`'s folder on PYTHONPATH"
    return ""


class PyHessianProduct:
    """PyHessian's single-batch product (its `hessian(data=...)` set-up: one backward with
    `create_graph=True`, graphs left on every parameter's `.grad`), and `close()`, which frees them."""

    def __init__(self, model: nn.Module, batch: tuple, name: str) -> None:
        from pyhessian import hessian as PyHessian

        tally("hvp", name)  # the set-up costs a gradient with its graph
        self.model = model
        self.free()  # PyHessian adds to existing .grad
        with sdpa_kernel(SDPBackend.MATH):
            self.h = PyHessian(model, nn.CrossEntropyLoss(), data=batch, cuda=batch[0].is_cuda)
        self.sizes = [p.numel() for p in self.h.params]

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        from pyhessian.utils import hessian_vector_product

        vs = [t.view_as(p) for t, p in zip(v.split(self.sizes), self.h.params)]
        with sdpa_kernel(SDPBackend.MATH):
            hv = hessian_vector_product(self.h.gradsH, self.h.params, vs)
        return torch.cat([t.reshape(-1) for t in hv])

    def free(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    def close(self) -> None:
        """Drop PyHessian's gradient graphs (held by `.grad` and `gradsH`)."""
        self.free()
        self.h = None
        gc.collect()


def _gradient(model: nn.Module, batch: tuple, fused: bool = False) -> Callable[[], object]:
    params = [p for p in model.parameters() if p.requires_grad]

    def gradient() -> object:
        with nullcontext() if fused else sdpa_kernel(SDPBackend.MATH):  # fused: torch's own choice
            return torch.autograd.grad(F.cross_entropy(model(batch[0]), batch[1]), params)

    return gradient


def has_attention(model: nn.Module) -> bool:
    return any(hasattr(m, "fused_attn") for m in model.modules())


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref.double()).norm() / ref.double().norm())


def error_rows(name: str, s, device: str) -> list[Row]:
    """Relative error of every product path against the cold double backward in fp32 with TF32 off,
    under each TF32 setting; and of that reference against a float64 cold double backward."""
    model, batch = build(name, s.hessian_batch, device)
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(1))
    v = v.to(device)
    with tf32("off"):
        tally("hvp", name)
        ref = our_operator(model, [batch]) @ v
    tally("hvp64", name)
    model64 = copy.deepcopy(model).double()
    ref64 = our_operator(model64, [(batch[0].double(), batch[1])]) @ v.double()
    del model64
    rows = [
        Row(
            "GPU Hessian error",
            f"{name}: cold double backward fp32 (TF32 off) vs float64",
            f"{_rel(ref, ref64):.1e}",
            "float64 cold double backward",
        )
    ]
    missing = pyhessian_missing()
    for setting in s.tf32_settings:
        with tf32(setting):
            got = {
                "cold": counted("hvp", name, lambda: our_operator(model, [batch]) @ v)(),
                "cached": counted("hvp", name, lambda: our_operator(model, [batch], cache_graph=True) @ v)(),
                "forward-over-reverse": counted("hvp", name, lambda: forward_over_reverse(model, batch)(v))(),
            }
            if not missing:
                peer = PyHessianProduct(model, batch, name)
                try:
                    got["PyHessian"] = counted("hvp", name, lambda: peer(v))()  # noqa: B023
                finally:
                    peer.close()
        rows.append(
            Row(
                "GPU Hessian error",
                f"{name}: relative error of Hv against ref, {TF32_LABEL[setting]}",
                ", ".join(f"{k} {_rel(t, ref):.1e}" for k, t in got.items()),
                "ref: cold double backward, fp32 TF32 off",
                note=f"PyHessian: {missing}" if missing else "",
            )
        )
    return rows


def time_rows(name: str, s, device: str, clock: str) -> list[Row]:
    """Time of the fused-kernel gradient and of each product over the math-kernel gradient's; our
    cached product over PyHessian's (interleaved repetitions, median)."""
    model, batch = build(name, s.hessian_batch, device)
    cold = our_operator(model, [batch])
    cached = our_operator(model, [batch], cache_graph=True)
    fwd_rev = forward_over_reverse(model, batch)
    v = torch.randn(cold.size, device=device)
    t = interleaved(
        {
            "grad": counted("grad", name, _gradient(model, batch)),
            "fused": counted("grad", name, _gradient(model, batch, fused=True)),
            "cold": counted("hvp", name, lambda: cold @ v),
            "cached": counted("hvp", name, lambda: cached @ v),
            "for": counted("hvp", name, lambda: fwd_rev(v)),
        },
        s.repeats,
        clock,
    )
    cached.clear_cache()
    base = f"gradient {ms(t['grad'])}"
    fused_note = "" if has_attention(model) else "no attention layers: the same kernels (a noise gauge)"
    rows = [
        Row(
            "GPU Hessian time",
            f"{name}: gradient, fused attention kernels / math kernel",
            ms(t["fused"]),
            base,
            ratios(t["fused"], t["grad"]),
            note=fused_note,
        ),
    ]
    for key, label in (
        ("cold", "double backward, cold"),
        ("cached", "double backward, graph cached"),
        ("for", "forward-over-reverse"),
    ):
        rows.append(
            Row(
                "GPU Hessian time",
                f"{name} batch {s.hessian_batch}: product ({label}) / gradient",
                ms(t[key]),
                base,
                ratios(t[key], t["grad"]),
                goal=3.5 if key == "cold" else None,
            )
        )
    rows.append(_pyhessian_time_row(name, model, batch, cached, v, s, clock))
    return rows


def _pyhessian_time_row(name, model, batch, cached, v, s, clock) -> Row:
    figure = f"{name}: our cached product / PyHessian's product (both graphs held)"
    missing = pyhessian_missing()
    if missing:
        return Row("GPU Hessian time", figure, "-", "-", missed=missing)
    peer = PyHessianProduct(model, batch, name)
    try:
        t = interleaved(
            {
                "cached": counted("hvp", name, lambda: cached @ v),
                "peer": counted("hvp", name, lambda: peer(v)),
            },
            s.repeats,
            clock,
        )
    finally:
        peer.close()
        cached.clear_cache()
    return Row(
        "GPU Hessian time",
        figure,
        ms(t["cached"]),
        f"PyHessian {ms(t['peer'])}",
        ratios(t["cached"], t["peer"]),
        goal=1.0,
    )


def ms(xs: list[float]) -> str:
    import statistics

    return f"{1e3 * statistics.median(xs):.1f} ms"


def _measure(
    device: str, make: Callable[[], object], product: Callable[[object], object]
) -> tuple[int, int, int]:
    """(peak, held, left) bytes: the allocator's high-water mark above the start while `make()`'s state
    is built and one product runs; what stays allocated with the state alive and the product's result
    dropped (the retained graph); what is left after the state is closed and dropped. CPU: zeros."""
    cuda = device == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    state = make()
    out = product(state)
    del out
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        held = torch.cuda.memory_allocated() - base
    getattr(state, "close", getattr(state, "clear_cache", lambda: None))()
    del state
    gc.collect()
    if not cuda:
        return 0, 0, 0
    torch.cuda.synchronize()
    return peak, held, torch.cuda.memory_allocated() - base


def memory_rows(name: str, s, device: str) -> list[Row]:
    """Peak memory of one product over one gradient's, and what each method holds between products."""
    model, batch = build(name, s.hessian_batch, device)
    v = torch.randn(sum(p.numel() for p in model.parameters()), device=device)
    tally("grad", name)
    grad_peak = _measure(device, lambda: None, lambda _: _gradient(model, batch)())[0]
    makers: dict[str, tuple[Callable[[], object], Callable]] = {
        "double backward, cold": (lambda: our_operator(model, [batch]), lambda op: op @ v),
        "double backward, graph cached": (
            lambda: our_operator(model, [batch], cache_graph=True),
            lambda op: op @ v,
        ),
        "forward-over-reverse": (lambda: forward_over_reverse(model, batch), lambda f: f(v)),
    }
    missing = pyhessian_missing()
    if not missing:
        makers["PyHessian"] = (lambda: PyHessianProduct(model, batch, name), lambda peer: peer(v))
    mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    rows = []
    for label, (make, product) in makers.items():
        tally("hvp", name)
        peak, held, left = _measure(device, make, product)
        cpu_note = "not measured on the CPU (the dry run only runs the code)"
        note = cpu_note if device != "cuda" else f"{mib(left)} left allocated after the state was dropped"
        rows.append(
            Row(
                "GPU Hessian memory",
                f"{name}: peak memory of a product ({label}) / gradient's",
                f"{mib(peak)} peak, {mib(held)} held between products",
                f"gradient {mib(grad_peak)}",
                [peak / grad_peak] if device == "cuda" and grad_peak > 0 else [],
                note=note,
            )
        )
    if missing:
        rows.append(Row("GPU Hessian memory", f"{name}: PyHessian's memory", "-", "-", missed=missing))
    return rows
