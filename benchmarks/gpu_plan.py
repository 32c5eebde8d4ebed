"""What the GPU benchmark does, counted, and how long that takes on an H100: the dry run's projection.

Every measured call of `benchmarks.gpu` is tallied (`tally`) as a unit of work on one model: a
gradient, a Hessian-vector product, a float64 product, a forward pass, a training step, a model build,
a `Trainer.fit` start, the synthetic data set, a loader batch, a DDP subprocess. `plan(scale)` gives
the same counts from the sizes alone (a test checks that the dry run's tally equals `plan(DRY)`), so
`plan(FULL)` is what the GPU run will do.
A unit's seconds on an H100 = its FLOPs (counted on the meta device at full size, `torch.utils.
flop_counter`, cached in results/cache/) over a conservative sustained rate, plus a fixed cost per
dispatched operator; the fixed costs are stated below. The projection is a budget check, not a timing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["TALLY", "begin", "tally", "tallied", "plan", "project", "PROJECTION_ASSUMPTIONS"]

TALLY: Counter = Counter()  # (section, unit, model) -> count
_SECTION = ["-"]
COUNT_MISSING = [True]  # count a model's FLOPs on the meta device when the cache lacks them
CACHE = Path(__file__).resolve().parent / "results" / "cache" / "gpu-unit-flops.json"

# Sustained rates well below an H100's peaks (fp32 67 TFLOP/s without tensor cores, TF32 495, bf16 990,
# fp64 67): CIFAR-sized layers (32x32 inputs, batch 128) keep the tensor cores far from busy.
RATE = {"fp32": 20e12, "bf16": 60e12, "fp64": 15e12}
SECONDS_PER_OP = 15e-6  # eager dispatch + launch per aten operator, added (not overlapped): conservative
FIXED = {"start": 30.0, "fit": 8.0, "build": 3.0, "data": 30.0, "data_batch": 0.05, "ddp": 0.0}
PROJECTION_ASSUMPTIONS = (
    f"FLOPs at {RATE['fp32'] / 1e12:.0f} TFLOP/s fp32/TF32, {RATE['bf16'] / 1e12:.0f} bf16, "
    f"{RATE['fp64'] / 1e12:.0f} fp64, plus {SECONDS_PER_OP * 1e6:.0f} us per operator; "
    f"{FIXED['start']:.0f} s start-up, {FIXED['fit']:.0f} s per training run's start, "
    f"{FIXED['build']:.0f} s per model build, {FIXED['data']:.0f} s to make the synthetic training set"
)


def begin(section: str) -> None:
    """Tally what follows under `section`."""
    _SECTION[0] = section


def tally(unit: str, model: str, n: int = 1) -> None:
    """Count `n` units of work of kind `unit` on `model` in the current section (module docstring)."""
    TALLY[(_SECTION[0], unit, model)] += n


def _hessian_units(s, m: str, pyhessian: bool) -> dict[str, Counter]:
    r = s.repeats + 1  # `interleaved` runs everything once untimed first
    py = 1 if pyhessian else 0
    return {
        # a reference, then per TF32 setting cold + cached + forward-over-reverse (+ PyHessian's set-up
        # and product); one float64 product
        f"hessian-error:{m}": Counter(
            {("build", m): 1, ("hvp", m): 1 + len(s.tf32_settings) * (3 + 2 * py), ("hvp64", m): 1}
        ),
        # gradient (math and fused kernels) and 3 products interleaved; cached against PyHessian (its
        # set-up is one product)
        f"hessian-time:{m}": Counter(
            {("build", m): 1, ("grad", m): 2 * r, ("hvp", m): 3 * r + py * (2 * r + 1)}
        ),
        # a gradient; cold, cached, forward-over-reverse (+ PyHessian's set-up and product)
        f"hessian-memory:{m}": Counter({("build", m): 1, ("grad", m): 1, ("hvp", m): 3 + 2 * py}),
    }


def plan(s, *, pyhessian: bool, gpus: int) -> dict[str, Counter]:
    """{section: units} the benchmark runs at scale `s` (a `benchmarks.gpu.Scale`), as `tally` counts.

    pyhessian: whether PyHessian imports; gpus: CUDA devices (0 on the CPU, where the dry run still
    runs the DDP subprocess on 2 CPU processes)."""
    out: dict[str, Counter] = {}
    for m in s.hessian_models:
        out.update(_hessian_units(s, m, pyhessian))
    g, t = s.grid_model, s.train_model
    out["landscape"] = Counter(
        {("build", g): 1, ("forward", g): (s.grid_repeats + 1) * 2 * s.grid_steps**2 * 2}
    )
    out["training"] = Counter(
        {
            ("data", t): 1,
            ("fit", t): 2 * s.train_repeats,
            ("train_step", t): 2 * s.train_repeats * s.train_steps,
            ("data_batch", t): min(50, s.train_steps),  # the loader alone
        }
    )
    out["ddp"] = Counter({("ddp", t): 1}) if gpus != 1 else Counter()
    return out


def tallied() -> dict[str, Counter]:
    """The tally in `plan`'s shape."""
    out: dict[str, Counter] = {}
    for (section, unit, model), n in TALLY.items():
        out.setdefault(section, Counter())[(unit, model)] += n
    return out


# ---- cost per unit -----------------------------------------------------------------------------------
def _count(fn: Callable[[], object]) -> tuple[float, int]:
    """(FLOPs, aten operators) of one call of `fn`."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class Ops(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Ops.n += 1
            return func(*args, **(kwargs or {}))

    flops = FlopCounterMode(display=False)
    with flops, Ops():
        fn()
    return float(flops.get_total_flops()), Ops.n


def _meta_counts(name: str, batch: int) -> dict[str, tuple[float, int]]:
    """FLOPs and operators of a gradient, a product (the larger FLOPs and the larger operator count of
    double backward and forward-over-reverse) and a forward pass of `name` at `batch`, on the meta
    device (nothing is computed)."""
    import timm
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import alternet_pl.models  # noqa: F401
    from benchmarks.hessian_suite import forward_over_reverse

    with torch.device("meta"):
        model = timm.create_model(name, num_classes=100).eval()
        x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 100, (batch,))
    params = list(model.parameters())

    def double_backward() -> None:
        g = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        torch.autograd.grad(sum((t * t.detach()).sum() for t in g), params)

    v = torch.zeros(sum(p.numel() for p in params), device="meta")
    with sdpa_kernel(SDPBackend.MATH):
        out = {
            "grad": _count(lambda: torch.autograd.grad(F.cross_entropy(model(x), y), params)),
            "hvp": tuple(
                map(max, _count(double_backward), _count(lambda: forward_over_reverse(model, (x, y))(v)))
            ),
        }
        with torch.no_grad():
            out["forward"] = _count(lambda: model(x))
    return out


def unit_counts(name: str, batch: int) -> dict[str, tuple[float, int]]:
    """`_meta_counts`, cached on disk (minutes on a loaded CPU) under the model name and batch size."""
    key = f"{name}|{batch}"
    cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    if key not in cache:
        if not COUNT_MISSING[0]:
            raise KeyError(f"no counts for {key} in {CACHE.name}; run the dry run on the CPU first")
        cache[key] = {k: list(v) for k, v in _meta_counts(name, batch).items()}
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, CACHE)
    return {k: (float(v[0]), int(v[1])) for k, v in cache[key].items()}


def unit_seconds(unit: str, model: str, s) -> float:
    """Projected H100 seconds of one unit of kind `unit` on `model` at scale `s`."""
    if unit in FIXED:
        return FIXED[unit]
    batch = {"forward": s.grid_batch, "train_step": s.train_batch}.get(unit, s.hessian_batch)
    counts = unit_counts(model, batch)
    flops, ops = counts[{"train_step": "grad", "hvp64": "hvp"}.get(unit, unit)]
    rate = {"train_step": RATE["bf16"], "hvp64": RATE["fp64"]}.get(unit, RATE["fp32"])
    return flops / rate + ops * SECONDS_PER_OP


def project(units: dict[str, Counter], s) -> dict[str, float]:
    """Projected H100 seconds per section of `units` (`plan`'s shape) at scale `s`, with "start"."""
    out = {"start": FIXED["start"]}
    for section, counts in units.items():
        out[section] = sum(n * unit_seconds(unit, model, s) for (unit, model), n in counts.items())
    return out
