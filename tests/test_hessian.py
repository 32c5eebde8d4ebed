"""Hessian analysis vs independent references: dense float64 Hessians from torch.func on tiny models."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from alternet_pl.analysis import hessian as hs
from alternet_pl.analysis.loss import cross_entropy_loss
from alternet_pl.callbacks.options import (
    AnalysisData,
    DensityOptions,
    EigenOptions,
    SpectrumOptions,
    TraceOptions,
    WeightDecayTerm,
)


def make_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def make_cnn() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 3),
    ).double()
    bn = model[1]  # non-trivial running statistics and affine parameters
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return model


def make_batches(shape: tuple, sizes=(5, 3, 7), seed: int = 2) -> list:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
        for n in sizes
    ]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run ~5x faster on one thread when the cores are shared; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CASES = {"mlp": (make_mlp, (4,)), "cnn": (make_cnn, (2, 5, 5))}


def dense_hessian(model: nn.Module, batches: list, names: list[str] | None = None) -> torch.Tensor:
    """Full-batch Hessian of the mean cross-entropy (eval mode) by torch.func.hessian."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    names = names or list(params)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    flat0 = torch.cat([params[n].reshape(-1) for n in names])
    sizes = [params[n].numel() for n in names]

    def f(flat):
        new = dict(params)
        for n, t in zip(names, flat.split(sizes)):
            new[n] = t.view(params[n].shape)
        return F.cross_entropy(functional_call(model, new, (x,)), y)

    was = model.training
    model.eval()
    h = torch.func.hessian(f)(flat0)
    model.train(was)
    return h


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    make, shape = CASES[request.param]
    model = make()
    batches = make_batches(shape)
    return model, batches, dense_hessian(model, batches)


def op_for(model, batches, **kw):
    return hs.HessianOperator(model, cross_entropy_loss, batches, dtype=torch.float64, **kw)


def test_hvp_equals_dense_hessian_times_v_with_uneven_batches(case):
    model, batches, h = case
    model.train()  # the operator evaluates in eval mode and puts the flags back
    op = op_for(model, batches)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(op.size, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(op @ v[:, 0], h @ v[:, 0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op @ v, h @ v, rtol=1e-10, atol=1e-12)
    assert op.num_hvps == 3
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("which,k", [("LA", 1), ("LA", 3), ("SA", 2), ("LM", 3), ("BE", 3)])
def test_lanczos_eigenvalues_match_eigvalsh(case, which, k):
    model, batches, h = case
    evals = torch.linalg.eigvalsh(h)
    res = hs.top_eigenvalues(op_for(model, batches), k=k, which=which, tol=1e-8, max_iter=h.shape[0])
    vals, vecs = res
    expected = {
        "LA": evals[-k:],
        "SA": evals[:k],
        "LM": evals[evals.abs().argsort()[-k:]].sort().values,
        "BE": torch.cat([evals[: k // 2], evals[-((k + 1) // 2) :]]),
    }[which]
    assert res.converged
    torch.testing.assert_close(vals, expected, rtol=1e-6, atol=1e-9)
    assert vecs.shape == (h.shape[0], k)
    true_res = (h @ vecs - vecs * vals).norm(dim=0)  # reported residual bounds are the true ones
    torch.testing.assert_close(res.residuals, true_res, rtol=1e-3, atol=1e-9)
    assert res.num_hvps < h.shape[0]  # stopped by the residual rule, not by exhausting the space


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_power_iteration_agrees(case, which):
    model, batches, h = case
    evals = torch.linalg.eigvalsh(h)
    res = hs.top_eigenvalues(
        op_for(model, batches), k=2, which=which, tol=1e-5, max_iter=3000, method="power"
    )
    expected = {"LA": evals[-2:], "SA": evals[:2], "LM": evals[evals.abs().argsort()[-2:]].sort().values}[
        which
    ]
    assert res.converged
    # residual r bounds the eigenvalue error by r^2 / gap: tol 1e-5 on residuals is far tighter here
    torch.testing.assert_close(res.eigenvalues, expected, rtol=1e-6, atol=1e-8)


def test_hutch_plus_plus_is_exact_when_the_sketch_spans_the_space(case):
    model, batches, h = case
    n = h.shape[0]
    mean, stderr = hs.trace(op_for(model, batches), num_samples=3 * n + 2, method="hutch++")
    assert mean == pytest.approx(float(h.trace()), rel=1e-8, abs=1e-10)
    assert stderr < 1e-8 * h.abs().max()


def test_hutchinson_is_unbiased_with_the_right_standard_error(case):
    model, batches, h = case
    m = 400
    mean, stderr = hs.trace(op_for(model, batches), num_samples=m, method="hutchinson", seed=1)
    # Var(z^T H z) for Rademacher z is 2 * sum_{i != j} H_ij^2: the estimator's true standard error
    true_se = math.sqrt(2 * float((h**2).sum() - (h.diagonal() ** 2).sum()) / m)
    assert stderr == pytest.approx(true_se, rel=0.25)
    assert abs(mean - float(h.trace())) < 4 * true_se


class Recording:
    """Wraps an operator and records every vector it is applied to (to check SLQ's quadrature exactly)."""

    def __init__(self, op):
        self.op, self.seen = op, []
        self.size, self.dtype, self.device = op.size, op.dtype, op.device

    def __matmul__(self, v):
        self.seen.append(v.clone())
        return self.op @ v


def test_slq_weights_and_moments(case):
    model, batches, h = case
    n = h.shape[0]
    runs, steps = 30, 8
    rec = Recording(op_for(model, batches))
    nodes, weights = hs.spectral_density(rec, num_runs=runs, num_steps=steps, seed=0)
    assert nodes.shape == weights.shape == (runs * steps,)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    evals = torch.linalg.eigvalsh(h)
    assert nodes.min() >= evals[0] - 1e-9 and nodes.max() <= evals[-1] + 1e-9
    probes = torch.stack(rec.seen[::steps])  # each run's normalised start vector
    for j in (1, 2):
        hj = torch.linalg.matrix_power(h, j)
        # Gauss quadrature with `steps` nodes is exact for degree <= 2 * steps - 1: q^T H^j q per run
        exact = torch.einsum("ri,ij,rj->r", probes, hj, probes).mean()
        assert float((weights * nodes**j).sum()) == pytest.approx(float(exact), rel=1e-9)
        # ... and unbiased for tr(H^j) / n, within 4 standard errors of a Rademacher quadratic form
        se = math.sqrt(2 * float((hj**2).sum() - (hj.diagonal() ** 2).sum()) / runs) / n
        assert abs(float(exact) - float(hj.trace()) / n) < 4 * se


def test_smoothed_density_integrates_to_one():
    nodes = torch.tensor([-1.0, 0.0, 3.0])
    weights = torch.tensor([0.2, 0.5, 0.3])
    grid = torch.linspace(-5, 8, 4001)
    dens = hs.smoothed_density(nodes, weights, grid, sigma=0.1)
    assert float(torch.trapezoid(dens, grid)) == pytest.approx(1.0, abs=1e-6)
    assert float(dens[(grid - 0.0).abs().argmin()]) == pytest.approx(
        0.5 / (0.1 * math.sqrt(2 * math.pi)), rel=1e-3
    )


def test_blockwise_equals_dense_sub_block():
    model, batches = make_mlp(), make_batches((4,))
    names = [n for n, _ in model.named_parameters()]
    h = dense_hessian(model, batches)
    sizes = [p.numel() for p in model.parameters()]
    start = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    idx = torch.arange(start[2], start[4])  # the second Linear ("2.weight", "2.bias")
    sub = h[idx][:, idx]
    for params in ("2", ["2."], model[2], ["2.weight", "2.bias"]):
        op = op_for(model, batches, params=params)
        assert op.names == names[2:]
        v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(op @ v, sub @ v, rtol=1e-10, atol=1e-12)
    vals, _ = hs.top_eigenvalues(op_for(model, batches, params=model[2]), k=2, tol=1e-9, max_iter=18)
    torch.testing.assert_close(vals, torch.linalg.eigvalsh(sub)[-2:], rtol=1e-7, atol=1e-10)


def test_train_mode_uses_batch_statistics_and_leaves_running_stats_alone():
    model, batches = make_cnn(), make_batches((2, 5, 5))
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    op = op_for(model, batches, mode="train")
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    hv = op @ v
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    # Reference: the same network with BatchNorm written out by hand (batch mean and biased variance).
    # (torch.func.hessian of the native batch_norm in training mode is wrong for the BN weight block in
    # torch 2.14; double backward agrees with this reference and with finite differences.)
    ref = copy.deepcopy(model)
    ref[1] = ManualBatchNorm(ref[1])
    total = sum(b[0].shape[0] for b in batches)
    expected = sum(_train_hessian(ref, b) @ v * (b[0].shape[0] / total) for b in batches)
    torch.testing.assert_close(hv, expected, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(hv, op_for(model, batches) @ v)  # and it is not the eval-mode Hessian


class ManualBatchNorm(nn.Module):
    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps

    def forward(self, x):
        mean = x.mean((0, 2, 3), keepdim=True)
        var = x.var((0, 2, 3), unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


def _train_hessian(model, batch):
    params = {n: p.detach() for n, p in model.named_parameters()}
    sizes = [p.numel() for p in params.values()]

    def f(flat):
        new = {n: t.view(p.shape) for (n, p), t in zip(params.items(), flat.split(sizes))}
        return F.cross_entropy(functional_call(model, new, (batch[0],)), batch[1])

    return torch.func.hessian(f)(torch.cat([p.reshape(-1) for p in params.values()]))


@pytest.mark.parametrize("form", ["l2", "norm"])
def test_weight_decay_term(form):
    model, batches = make_mlp(), make_batches((4,))
    wd = 0.05
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    sizes = [p.numel() for p in model.parameters()]

    def reg(flat):
        parts = flat.split(sizes)
        return (
            0.5 * wd * sum((t**2).sum() for t in parts) if form == "l2" else wd * sum(t.norm() for t in parts)
        )

    h = dense_hessian(model, batches) + torch.func.hessian(reg)(flat0)
    op = op_for(model, batches, weight_decay=wd, weight_decay_form=form)
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(op @ v, h @ v, rtol=1e-10, atol=1e-12)


def test_max_eigenvalue_spectrum_per_batch():
    model, batches = make_mlp(), make_batches((4,))

    def spectrum(max_iter, **kw):
        return hs.max_eigenvalue_spectrum(
            model,
            cross_entropy_loss,
            batches,
            k=2,
            which="LM",
            dtype=torch.float64,
            tol=1e-9,
            max_iter=max_iter,
            **kw,
        )

    spec = spectrum(43)
    assert spec.shape == (3, 2)
    for row, b in zip(spec, batches):
        ev = torch.linalg.eigvalsh(dense_hessian(model, [b]))
        torch.testing.assert_close(row, ev[ev.abs().argsort()[-2:]].sort().values, rtol=1e-7, atol=1e-10)
    # residual info: the true ||H x - theta x|| is tiny when converged; 2 Lanczos steps cannot converge
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        vals, res, ok = spectrum(43, return_info=True)
        _, res_short, ok_short = spectrum(2, return_info=True)
    torch.testing.assert_close(vals, spec)
    assert ok.all() and res.shape == (3, 2) and (res <= 1e-9 * vals.abs().max()).all()
    assert not ok_short.any() and (res_short > 1e-9 * vals.abs().max()).any()


def test_float64_operator_on_a_float32_model_round_trips_exactly():
    model = make_mlp().float()
    batches = [(x.float(), y) for x, y in make_batches((4,))]
    model[0].weight.grad = torch.ones_like(model[0].weight)  # an existing float32 .grad stays as it is
    before = [p.detach().clone() for p in model.parameters()]
    op64 = hs.HessianOperator(model, cross_entropy_loss, batches, dtype=torch.float64)
    op32 = hs.HessianOperator(model, cross_entropy_loss, batches)
    v = torch.randn(op64.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = dense_hessian(make_mlp(), make_batches((4,)))  # same weights in float64 (float32-exact inputs aside)
    hv64 = op64 @ v
    assert hv64.dtype == torch.float64
    torch.testing.assert_close((op32 @ v.float()).double(), hv64, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hv64, h @ v, rtol=1e-5, atol=1e-6)  # float32-rounded weights and data
    assert all(p.dtype == torch.float32 and torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))


def test_timm_vit_double_backward_on_cpu():
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=8, patch_size=2, embed_dim=16, depth=1, num_heads=2, num_classes=3
    ).double()
    assert timm is not None and model.blocks[0].attn.fused_attn  # the fused CPU kernel has no double backward
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
        for n in (3, 2)
    ]
    op = op_for(model, batches)
    v = torch.randn(op.size, generator=g, dtype=torch.float64)
    v /= v.norm()
    params = op.params

    def grad_at(shift: float) -> torch.Tensor:
        with torch.no_grad():
            for p, u in zip(params, op._split(v)):
                p.add_(shift * u)
        model.eval()
        total = sum(F.cross_entropy(model(x), y) * len(y) for x, y in batches) / 5
        grads = torch.autograd.grad(total, params)
        with torch.no_grad():
            for p, u in zip(params, op._split(v)):
                p.sub_(shift * u)
        return torch.cat([t.reshape(-1) for t in grads])

    eps = 1e-4  # central difference of gradients along a unit vector: O(eps^2) truncation error
    fd = (grad_at(eps) - grad_at(-eps)) / (2 * eps)
    hv = op @ v
    assert float((hv - fd).norm() / fd.norm()) < 1e-6
    res = hs.top_eigenvalues(op, k=1, tol=1e-6, max_iter=150)
    assert res.converged and res.num_hvps < 150


def test_non_convergence_warns_with_residuals():
    model, batches = make_mlp(), make_batches((4,))
    with pytest.warns(RuntimeWarning, match="did not converge.*residuals"):
        res = hs.top_eigenvalues(op_for(model, batches), k=3, tol=1e-12, max_iter=3)
    assert not res.converged and res.residuals.shape == (3,)


def _bad_scalar_loss(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1], reduction="none"), len(batch[1])


def _no_grad_loss(model, batch):
    with torch.no_grad():
        return cross_entropy_loss(model, batch)


def test_bad_inputs_raise_clear_errors():
    model, batches = make_mlp(), make_batches((4,))
    op = op_for(model, batches)
    with pytest.raises(ValueError, match="shape"):
        op @ torch.zeros(op.size + 1, dtype=torch.float64)
    with pytest.raises(TypeError, match="dtype"):
        op @ torch.zeros(op.size)
    with pytest.raises(ValueError, match="k=44"):
        hs.top_eigenvalues(op, k=44)
    with pytest.raises(ValueError, match="which"):
        hs.top_eigenvalues(op, which="XX")
    with pytest.raises(ValueError, match="max_iter"):
        hs.top_eigenvalues(op, k=5, max_iter=3)
    with pytest.raises(ValueError, match="no trainable parameters selected"):
        op_for(model, batches, params="nonexistent")
    with pytest.raises(ValueError, match="empty"):
        op_for(model, [])
    with pytest.raises(ValueError, match="scalar"):
        hs.HessianOperator(model, _bad_scalar_loss, batches, dtype=torch.float64) @ torch.zeros(
            43, dtype=torch.float64
        )
    with pytest.raises(ValueError, match="no autograd graph"):
        hs.HessianOperator(model, _no_grad_loss, batches, dtype=torch.float64) @ torch.zeros(
            43, dtype=torch.float64
        )
    linear = nn.Linear(4, 3).double()  # the loss sum(Wx + b) is linear in the parameters
    with pytest.raises(ValueError, match="second-derivative path"):
        hs.HessianOperator(
            linear, lambda m, b: (m(b[0]).sum(), 1), batches, dtype=torch.float64
        ) @ torch.zeros(15, dtype=torch.float64)
    with pytest.raises(ValueError, match="less precise"):
        hs.HessianOperator(model, cross_entropy_loss, batches, dtype=torch.float32)
    with pytest.raises(ValueError, match="mode"):
        op_for(model, batches, mode="training")
    with pytest.raises(ValueError, match="num_samples"):
        hs.trace(op, num_samples=3)
    gen = (b for b in batches)  # a one-shot generator is read empty the second time
    op_gen = op_for(model, gen)
    op_gen @ torch.zeros(43, dtype=torch.float64)
    with pytest.raises(ValueError, match="no samples"):
        op_gen @ torch.zeros(43, dtype=torch.float64)


# ---- the callback -------------------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Tanh())

    def forward(self, x):
        return x + self.branch(x)


class TinyNet(nn.Module):
    """A residual CNN with BatchNorm and `analysis_layers()`, in float64."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.block = Residual()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        self.double()
        self.block.branch[1].running_mean.uniform_(-0.5, 0.5)
        self.block.branch[1].running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.head(self.block(x))

    def analysis_layers(self):
        from alternet_pl.models.taps import Tap

        return {"block": Tap(self.block, "conv", branch=self.block.branch), "head": Tap(self.head, "head")}


class StandInModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = TinyNet()
        self.weight_decay = 0.05
        self.mixup_fn = None


class StandInData:
    def analysis_batches(self, split, num_batches, batch_size, augment, seed, mixup_fn):
        return make_batches((2, 5, 5), sizes=(5, 3, 7)[:num_batches], seed=seed + 5)


def snapshot(module: nn.Module) -> dict:
    return {
        "params": {n: p.detach().clone() for n, p in module.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()},
        "buffers": {n: b.clone() for n, b in module.named_buffers()},
        "modes": {n: m.training for n, m in module.named_modules()},
        "rng": torch.get_rng_state(),
    }


def assert_same(a: dict, b: dict) -> None:
    for key in ("params", "buffers"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][n], b[key][n]) for n in a[key]), key
    assert all(
        (x is None and y is None) or torch.equal(x, y)
        for x, y in zip(a["grads"].values(), b["grads"].values())
    )
    assert a["modes"] == b["modes"] and torch.equal(a["rng"], b["rng"])


def test_callback_results_files_and_untouched_state(tmp_path):
    from alternet_pl.callbacks import ANALYSES
    from alternet_pl.callbacks.hessian import HessianCallback

    assert ANALYSES["hessian"] is HessianCallback
    module, data = StandInModule(), StandInData()
    module.train()
    loss = cross_entropy_loss(module.model, data.analysis_batches("val", 3, None, False, 0, None)[0])[0]
    loss.backward()  # existing .grad must survive
    before = snapshot(module)
    cb = HessianCallback(
        data=AnalysisData(num_batches=3),
        dtype="float64",
        eigen=EigenOptions(tol=1e-8, max_iter=40),
        trace=TraceOptions(samples=200),
        density=DensityOptions(steps=6),
        spectrum=SpectrumOptions(enabled=True),
        blockwise=True,
    )
    result = cb.run(module, data, tmp_path, epoch=2)
    assert_same(before, snapshot(module))
    batches = data.analysis_batches("val", 3, None, False, 0, None)
    h = dense_hessian(module.model, batches)
    evals = torch.linalg.eigvalsh(h)
    assert result.top_eig == pytest.approx(float(evals[-1]), rel=1e-6)
    assert result.min_eig == pytest.approx(float(evals[0]), rel=1e-6, abs=1e-9)
    assert result.trace == pytest.approx(float(h.trace()), abs=4 * result.trace_stderr + 1e-9)
    assert result.spectrum.shape == (3, 2)
    nb = sum(p.numel() for p in module.model.block.branch.parameters())
    assert [n for n, _ in module.model.named_parameters()][:4] == [
        f"block.branch.{i}" for i in ("0.weight", "0.bias", "1.weight", "1.bias")
    ]
    sub = torch.linalg.eigvalsh(h[:nb, :nb])
    assert result.block_names == ["block"]
    assert result.block_top_eig[0] == pytest.approx(float(sub[-1]), rel=1e-6)
    out = tmp_path / "analysis" / "hessian"
    for name in (
        "epoch=002.json",
        "epoch=002.npz",
        "epoch=002.png",
        "epoch=002_spectrum.png",
        "epoch=002_blockwise.png",
    ):
        assert (out / name).is_file(), name


def test_callback_weight_decay_term_enters_the_hessian():
    from alternet_pl.callbacks.base import AnalysisContext
    from alternet_pl.callbacks.hessian import HessianCallback

    cb = HessianCallback(
        dtype="float64",
        eigen=EigenOptions(tol=1e-9, max_iter=40),
        trace=TraceOptions(samples=0),
        density=DensityOptions(enabled=False),
        spectrum=SpectrumOptions(enabled=True, k=2, which="LM"),
        weight_decay=WeightDecayTerm(0.05, "norm"),
    )
    module, batches = StandInModule(), make_batches((2, 5, 5))
    ctx = AnalysisContext(epoch=0, out_dir=None, rank=0, world_size=1, module=module)
    result = cb.compute(module.model, cross_entropy_loss, batches, ctx)
    op = op_for(module.model, batches, weight_decay=0.05, weight_decay_form="norm")
    assert cb.settings()["weight_decay"] == {"coefficient": 0.05, "form": "norm"}
    assert result.spectrum_which == "LM" and result.spectrum.shape == (3, 2)
    assert result.top_eig == pytest.approx(
        float(hs.top_eigenvalues(op, tol=1e-9).eigenvalues[0]), rel=1e-7
    )


def test_callback_bad_arguments():
    from alternet_pl.callbacks.hessian import HessianCallback

    for kwargs in ({"dtype": "half"}, {"mode": "x"}):
        with pytest.raises(ValueError, match="HessianCallback"):
            HessianCallback(**kwargs)
    for make, match in (
        (lambda: EigenOptions(k=0), "EigenOptions: k=0"),
        (lambda: TraceOptions(samples=2), "TraceOptions: samples=2"),
        (lambda: SpectrumOptions(which="X"), "SpectrumOptions: which='X'"),
    ):
        with pytest.raises(ValueError, match=match):
            make()


def test_callback_on_the_real_micro_alternet(tmp_path):
    """The quickstart's light setting on the real model, module and data: runs, converges, leaves no trace."""
    import alternet_pl.models  # noqa: F401
    from alternet_pl.callbacks.hessian import HessianCallback
    from alternet_pl.data.synthetic import SyntheticDataModule
    from alternet_pl.module import ImageClassifier

    module = ImageClassifier("alternet_cifar_micro", num_classes=10)
    data = SyntheticDataModule(num_train=32, num_val=32, batch_size=16)
    before = snapshot(module)
    cb = HessianCallback(
        data=AnalysisData(num_batches=1, batch_size=16),
        eigen=EigenOptions(k=1, tol=1e-2, max_iter=30),
        trace=TraceOptions(samples=0),
        density=DensityOptions(steps=8),
        blockwise=True,
    )
    result = cb.run(module, data, tmp_path, epoch=0)
    assert_same(before, snapshot(module))
    assert result.converged
    assert result.min_eig <= result.top_eig
    kinds = result.block_kinds
    assert "msa" in kinds and "conv" in kinds and len(result.block_top_eig) == len(kinds)


# ---- torch.distributed --------------------------------------------------------------------------------
def _ddp_worker(out_dir: str) -> dict:
    from alternet_pl.analysis.dist import rank_and_world
    from alternet_pl.callbacks.hessian import HessianCallback

    rank, world = rank_and_world()
    model, batches = make_mlp(), make_batches((4,))
    op = hs.HessianOperator(model, cross_entropy_loss, batches[rank::world], dtype=torch.float64)
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    module = StandInModule()
    cb = HessianCallback(
        data=AnalysisData(num_batches=3),
        dtype="float64",
        eigen=EigenOptions(tol=1e-9, max_iter=40),
        trace=TraceOptions(samples=12),
        density=DensityOptions(steps=5),
        spectrum=SpectrumOptions(enabled=True),
    )
    res = cb.run(module, StandInData(), out_dir, epoch=0)
    return {
        "hv": op @ v,
        "eig": hs.top_eigenvalues(op, k=2, tol=1e-9, max_iter=43).eigenvalues,
        "spectrum": hs.max_eigenvalue_spectrum(
            model, cross_entropy_loss, batches, k=1, dtype=torch.float64, tol=1e-9, max_iter=43
        ),
        "scalars": res.scalars(),
        "arrays": {k: getattr(res, k) for k in res.array_fields() if getattr(res, k) is not None},
    }


# one spawn of two gloo processes (~10-20 s): the whole DDP check in one go
def test_two_gloo_processes_equal_one_process(tmp_path):
    from tests.distributed import run_distributed

    ranks = run_distributed(_ddp_worker, world_size=2, args=(str(tmp_path / "ddp"),))
    single = _single_process_reference(str(tmp_path / "single"))
    for out in ranks:
        torch.testing.assert_close(out["hv"], single["hv"], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(out["eig"], single["eig"], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out["spectrum"], single["spectrum"], rtol=1e-9, atol=1e-12)
        for key, value in single["scalars"].items():
            assert out["scalars"][key] == pytest.approx(value, rel=1e-8, abs=1e-10), key
        for key, value in single["arrays"].items():
            assert out["arrays"][key] == pytest.approx(value, rel=1e-8, abs=1e-10), key


def _single_process_reference(out_dir: str) -> dict:
    return _ddp_worker(out_dir)


def test_registered_vit_micro_float32_matches_float64():
    import timm

    import alternet_pl.models  # noqa: F401

    torch.manual_seed(0)
    model = timm.create_model("vit_cifar_micro", num_classes=10)
    batches = [(torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2]))]
    op32 = hs.HessianOperator(model, cross_entropy_loss, batches)
    op64 = hs.HessianOperator(model, cross_entropy_loss, batches, dtype=torch.float64)
    v = torch.randn(op32.size, generator=torch.Generator().manual_seed(0))
    hv32, hv64 = op32 @ v, op64 @ v.double()
    assert float((hv32.double() - hv64).norm() / hv64.norm()) < 1e-4
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_cached_graph_gives_the_same_products_and_follows_weight_changes():
    """cache_graph=True reuses the first backward; results equal the uncached operator exactly
    enough, and a weight change invalidates the cache."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    batches = [(torch.randn(n, 4, dtype=torch.float64), torch.randint(0, 3, (n,))) for n in (5, 3)]
    from alternet_pl.analysis.hessian import HessianOperator
    from alternet_pl.analysis.loss import cross_entropy_loss

    plain = HessianOperator(model, cross_entropy_loss, batches, dtype=torch.float64)
    cached = HessianOperator(model, cross_entropy_loss, batches, dtype=torch.float64, cache_graph=True)
    for _ in range(3):
        v = torch.randn(plain.size, dtype=torch.float64)
        torch.testing.assert_close(cached @ v, plain @ v, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        model[0].weight.add_(0.5)
    v = torch.randn(plain.size, dtype=torch.float64)
    torch.testing.assert_close(cached @ v, plain @ v, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="cache_graph=True needs the model in torch.float64"):
        HessianOperator(model.float(), cross_entropy_loss, batches, dtype=torch.float64, cache_graph=True)


def test_blockwise_covers_every_transformer_step_and_alternet_block():
    """Block-wise mode finds the attention and MLP steps of timm blocks (whose drop-path branch
    holds no parameters) and every AlterNet block; together they hold all block parameters."""
    import timm

    import alternet_pl.models  # noqa: F401
    from alternet_pl.callbacks.hessian import _blocks

    vit = timm.create_model("vit_cifar_micro", num_classes=10)
    blocks = _blocks(vit)
    assert [t.kind for _, t in blocks] == ["msa", "mlp"] * len(vit.blocks)
    covered = {id(p) for _, t in blocks for m in t.block_modules() for p in m.parameters()}
    assert covered == {id(p) for p in vit.blocks.parameters()}
    alt = timm.create_model("alternet_cifar_micro", num_classes=10)
    names = [n for n, _ in _blocks(alt)]
    assert names == [f"stages.{i}.{j}" for i, s in enumerate(alt.stages) for j in range(len(s))]
