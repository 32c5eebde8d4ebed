"""The GPU benchmark (run by `benchmarks/gpu.sh`): the code paths a CPU never exercises, at full size.

    python -m benchmarks.gpu [--dry-run] [--out DIR]

1. bf16-mixed training of `alter_r50` (`alternet_cifar_50`, 100 classes): images/s of our Lightning
   step against a plain PyTorch bf16-autocast loop (same model, data, optimizer).
2. A single-GPU DDP fit (NCCL): its step time over the plain single-device Lightning step.
3. The Hessian on full-size ResNet-50 (`resnet_cifar_50`) and ViT-Ti (`vit_cifar_ti`) at batch 128:
   time per product over a gradient (double backward cold and with the graph cache, forward-over-
   reverse), peak memory with and without the graph cache over a gradient's, and PyHessian's product.
4. Landscape cells per second against the forward floor (11 x 11 grid).
Writes the same table as `benchmarks.run` to benchmarks/results/<date>-<gpu>-gpu.md.

`--dry-run` runs every path at micro scale on whatever device there is (the CPU here), to prove the
code before a GPU is lent: the figures then mean nothing.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.table import Row, interleaved, machine_description, ratios, render, write_results


@dataclass(frozen=True)
class Scale:
    """Sizes of one run: the full GPU run or the CPU dry run."""

    train_model: str
    num_classes: int
    train_batch: int
    train_steps: int
    warmup: int
    workers: int
    hessian_models: tuple[str, ...]
    hessian_batch: int
    repeats: int
    grid_model: str
    grid_steps: int
    grid_batch: int


FULL = Scale(
    "alternet_cifar_50",
    100,
    128,
    40,
    10,
    8,
    ("resnet_cifar_50", "vit_cifar_ti"),
    128,
    5,
    "alternet_cifar_50",
    11,
    256,
)
DRY = Scale(
    "alternet_cifar_micro",
    10,
    8,
    5,
    2,
    0,
    ("resnet_cifar_micro", "vit_cifar_micro"),
    8,
    2,
    "alternet_cifar_micro",
    3,
    8,
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


# ---- 1 and 2: training -------------------------------------------------------------------------------
def training_rows(s: Scale, device: str, clock: str) -> list[Row]:
    from benchmarks.training_suite import _data, lightning_steps, plain_steps

    dm = _data(s.train_batch, s.train_steps, num_classes=s.num_classes, workers=s.workers)
    accel = "gpu" if device == "cuda" else "cpu"
    ours, plain = [], []
    for rep in range(2):
        for side in ("ours", "plain")[:: -1 if rep % 2 else 1]:
            if side == "ours":
                ours.append(
                    lightning_steps(
                        s.train_model,
                        dm,
                        s.train_steps,
                        s.warmup,
                        clock,
                        accel,
                        "bf16-mixed",
                        num_classes=s.num_classes,
                    )
                )
            else:
                plain.append(
                    plain_steps(
                        s.train_model,
                        dm,
                        s.train_steps,
                        s.warmup,
                        clock,
                        device,
                        bf16=True,
                        num_classes=s.num_classes,
                    )
                )
    ips = lambda xs: f"{s.train_batch / _median(xs):.0f} img/s"  # noqa: E731
    rows = [
        Row(
            "GPU training",
            f"{s.train_model} bf16-mixed, batch {s.train_batch}: Lightning / plain bf16 loop (time per step)",
            ips(ours),
            f"plain {ips(plain)}",
            ratios(ours, plain),
            goal=1.05,
        )
    ]
    log(f"  training: ours {ips(ours)}, plain {ips(plain)}")
    single = _median(ours)
    try:
        ddp = lightning_steps(
            s.train_model,
            dm,
            s.train_steps,
            s.warmup,
            clock,
            accel,
            "bf16-mixed",
            strategy="ddp",
            num_classes=s.num_classes,
        )
        rows.append(
            Row(
                "GPU training",
                f"single-device DDP fit ({'NCCL' if device == 'cuda' else 'gloo'}) "
                "step / plain Lightning step",
                ips([ddp]),
                f"single {ips([single])}",
                [ddp / single],
            )
        )
    except Exception as err:  # noqa: BLE001  (report, keep going: the other rows still count)
        rows.append(
            Row(
                "GPU training",
                "single-device DDP fit step",
                "failed",
                "-",
                missed=f"{type(err).__name__}: {str(err)[:100]}",
            )
        )
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return rows


# ---- 3: Hessian -----------------------------------------------------------------------------------------
def peak_bytes(fn: Callable[[], object], device: str) -> tuple[int, int]:
    """(peak, retained) bytes added by `fn`: CUDA allocator's high-water mark and what stays allocated
    while `fn`'s result is alive; on the CPU the resident-set high-water mark (a dry run's stand-in)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        peak, held = torch.cuda.max_memory_allocated() - base, torch.cuda.memory_allocated() - base
        del result
        return peak, held
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return max(1, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024), 0


def _cached_product(model: nn.Module, batch: tuple, v: torch.Tensor) -> object:
    """A product with the graph cache; returns the operator, so its cached graphs stay alive."""
    from benchmarks.hessian_suite import our_operator

    op = our_operator(model, [batch], cache_graph=True)
    op @ v
    return op


def pyhessian_product(model: nn.Module, batch: tuple, device: str) -> Callable[[], object] | str:
    """PyHessian's full-batch product (its gradient graph built once, as our cached graph), or why not."""
    try:
        from pyhessian import hessian as PyHessian
        from pyhessian.utils import hessian_vector_product
    except ImportError:
        return "not installed"
    try:
        with sdpa_kernel(SDPBackend.MATH):
            h = PyHessian(model, nn.CrossEntropyLoss(), data=batch, cuda=device == "cuda")
        v = [torch.randn_like(p) for p in h.params]

        def product() -> None:
            with sdpa_kernel(SDPBackend.MATH):
                hessian_vector_product(h.gradsH, h.params, v)

        product()
        return product
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {str(err)[:80]}"


def hessian_rows(s: Scale, device: str, clock: str) -> list[Row]:
    rows = []
    for name in s.hessian_models:
        rows += _hessian_one(name, s, device, clock)
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def _hessian_one(name: str, s: Scale, device: str, clock: str) -> list[Row]:
    import timm

    import alternet_pl.models  # noqa: F401
    from benchmarks.hessian_suite import forward_over_reverse, our_operator

    rows = []
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=100).to(device).eval()
    x = torch.randn(s.hessian_batch, 3, 32, 32, device=device)
    y = torch.randint(0, 100, (s.hessian_batch,), device=device)
    batch = (x, y)
    params = [p for p in model.parameters() if p.requires_grad]
    cold = our_operator(model, [batch])
    cached = our_operator(model, [batch], cache_graph=True)
    fwd_rev = forward_over_reverse(model, batch)
    v = torch.randn(cold.size, device=device)

    def gradient() -> None:
        torch.autograd.grad(F.cross_entropy(model(x), y), params)

    fns = {
        "grad": gradient,
        "cold": lambda: cold @ v,
        "cached": lambda: cached @ v,
        "for": lambda: fwd_rev(v),
    }
    peer = pyhessian_product(model, batch, device)
    if callable(peer):
        fns["pyhessian"] = peer
    t = interleaved(fns, s.repeats, clock)
    ms = lambda xs: f"{1e3 * _median(xs):.1f} ms"  # noqa: E731
    base = f"gradient {ms(t['grad'])}"
    for key, label in (
        ("cold", "double backward, cold"),
        ("cached", "double backward, graph cached"),
        ("for", "forward-over-reverse"),
    ):
        rows.append(
            Row(
                "GPU Hessian",
                f"{name} batch {s.hessian_batch}: product ({label}) / gradient",
                ms(t[key]),
                base,
                ratios(t[key], t["grad"]),
                goal=3.5 if key == "cold" else None,
            )
        )
    if callable(peer):
        rows.append(
            Row(
                "GPU Hessian",
                f"{name}: our cached product / PyHessian's product",
                ms(t["cached"]),
                f"PyHessian {ms(t['pyhessian'])}",
                ratios(t["cached"], t["pyhessian"]),
                goal=1.0,
            )
        )
    else:
        rows.append(Row("GPU Hessian", f"{name}: vs PyHessian", "-", "-", missed=f"PyHessian: {peer}"))
    cached.clear_cache()
    grad_mem = peak_bytes(gradient, device)[0]
    mems = {
        "no graph cache": peak_bytes(lambda: cold @ v, device),
        "graph cache": peak_bytes(lambda: _cached_product(model, batch, v), device),
        "forward-over-reverse": peak_bytes(lambda: fwd_rev(v), device),
    }
    mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    for label, (peak, held) in mems.items():
        rows.append(
            Row(
                "GPU Hessian",
                f"{name}: peak memory of a product ({label}) / gradient's",
                mib(peak) + (f", {mib(held)} held between products" if held > 2**20 else ""),
                f"gradient {mib(grad_mem)}",
                [peak / grad_mem] if device == "cuda" else [],
                note="" if device == "cuda" else "not measured on the CPU (the dry run only runs the code)",
            )
        )
    log(f"  {name}: " + ", ".join(f"{k} {ms(x)}" for k, x in t.items()))
    return rows


# ---- 4: landscape --------------------------------------------------------------------------------------
def landscape_rows(s: Scale, device: str, clock: str) -> list[Row]:
    import timm

    import alternet_pl.models  # noqa: F401
    from alternet_pl.analysis.landscape import evaluate_grid, random_directions
    from alternet_pl.analysis.loss import cross_entropy_loss

    torch.manual_seed(0)
    model = timm.create_model(s.grid_model, num_classes=100).to(device).eval()
    batches = [
        (
            torch.randn(s.grid_batch, 3, 32, 32, device=device),
            torch.randint(0, 100, (s.grid_batch,), device=device),
        )
        for _ in range(2)
    ]
    dirs = random_directions(model, n=2, seed=0)
    axis = np.linspace(-1, 1, s.grid_steps)
    cells = s.grid_steps**2

    def floor() -> None:
        with torch.inference_mode():
            for _ in range(cells):
                for xb, _ in batches:
                    model(xb)

    def grid() -> None:
        evaluate_grid(model, cross_entropy_loss, batches, dirs, [axis, axis], progress=False)

    t = interleaved({"floor": floor, "grid": grid}, max(2, s.repeats // 2), clock)
    cps = lambda xs: f"{cells / _median(xs):.1f} cells/s"  # noqa: E731
    return [
        Row(
            "GPU landscape",
            f"{s.grid_model} {s.grid_steps}x{s.grid_steps} grid, 2x{s.grid_batch} images: "
            "grid time / forward floor",
            cps(t["grid"]),
            f"floor {cps(t['floor'])}",
            ratios(t["grid"], t["floor"]),
            goal=1.1,
        )
    ]


def main(argv: list[str] | None = None) -> Path | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="micro sizes on any device: proves the code paths")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.dry_run:
        ap.error(
            "no CUDA device: this benchmark needs a GPU; pass --dry-run to check the code paths on the CPU"
        )
    s = DRY if args.dry_run else FULL
    clock = "cuda" if device == "cuda" else "wall"
    if device == "cpu":
        torch.set_num_threads(1)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    start = time.perf_counter()
    machine = machine_description()
    rows: list[Row] = []
    for name, fn in (("hessian", hessian_rows), ("landscape", landscape_rows), ("training", training_rows)):
        log(f"[gpu:{name}] on {device}{' (dry run)' if args.dry_run else ''}")
        rows += fn(s, device, clock)
    settings = (
        f"DRY RUN at micro sizes on {device}: the figures mean nothing" if args.dry_run else "GPU run"
    ) + f"; {s}; took {time.perf_counter() - start:.0f} s; timings in {clock} seconds."
    text = render(rows, "alternet-pl GPU benchmark", settings, machine)
    print(text)
    if args.no_write:
        return None
    suffix = "-gpu-dry-run" if args.dry_run else "-gpu"
    path = write_results(text, args.out, suffix) if args.out else write_results(text, suffix=suffix)
    log(f"written to {path}")
    return path


if __name__ == "__main__":
    main()
