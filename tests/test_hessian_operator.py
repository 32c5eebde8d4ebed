"""HessianOperator vs independent references: dense float64 Hessians from torch.func on tiny models."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from alternet_pl.analysis import hessian as hs
from alternet_pl.analysis.loss import cross_entropy_loss
from alternet_pl.analysis.weight_decay import WeightDecayLoss
from tests.conftest import dense_hessian, make_batches, make_bn_cnn, make_mlp


def op_for(model, batches, **kw):
    return hs.HessianOperator(model, cross_entropy_loss, batches, **kw)


def test_hvp_equals_dense_hessian_times_v_with_uneven_batches(hessian_case):
    model, batches, h = hessian_case
    model.train()  # the operator evaluates in eval mode and puts the flags back
    op = op_for(model, batches)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(op.size, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(op @ v[:, 0], h @ v[:, 0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op @ v, h @ v, rtol=1e-10, atol=1e-12)
    assert op.num_hvps == 3
    assert all(m.training for m in model.modules())


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
    model, batches = make_bn_cnn(), make_batches((2, 5, 5))
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
    # afterwards BatchNorm tracks running statistics again: the next training step updates them
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.track_running_stats for m in bns)
    model.train()
    model(batches[0][0])
    assert not torch.equal(bns[0].running_mean, buffers["1.running_mean"])


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
    """H of WeightDecayLoss = dense H of the loss + dense H of the penalty over all parameter tensors;
    a block-wise operator gets exactly that Hessian's sub-block (the other tensors' terms are constant)."""
    model, batches = make_mlp(), make_batches((4,))
    wd = 0.05
    with torch.no_grad():
        model[0].bias.zero_()  # ||p|| = 0: no second derivative there; that tensor adds nothing
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    sizes = [p.numel() for p in model.parameters()]

    def reg(flat):
        parts = [t for t in flat.split(sizes) if form == "l2" or bool(t.detach().any())]
        return (
            0.5 * wd * sum((t**2).sum() for t in parts) if form == "l2" else wd * sum(t.norm() for t in parts)
        )

    h = dense_hessian(model, batches) + torch.func.hessian(reg)(flat0)
    assert torch.isfinite(h).all()
    loss = WeightDecayLoss(cross_entropy_loss, wd, form)
    op = hs.HessianOperator(model, loss, batches)
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(op @ v, h @ v, rtol=1e-10, atol=1e-12)
    block = hs.HessianOperator(model, loss, batches, params="2")
    idx = torch.arange(sizes[0] + sizes[1], op.size)
    torch.testing.assert_close(block @ v[idx], h[idx][:, idx] @ v[idx], rtol=1e-10, atol=1e-12)
    assert loss(model, batches[0])[0] > cross_entropy_loss(model, batches[0])[0]


def test_dtype_none_is_the_models_own():
    """The documented call `HessianOperator(model, loss_fn, batches)` works on float64 and float32 models."""
    model, batches = make_mlp(), make_batches((4,))
    assert hs.HessianOperator(model, cross_entropy_loss, batches).dtype == torch.float64
    model32 = make_mlp().float()
    batches32 = [(x.float(), y) for x, y in batches]
    assert hs.HessianOperator(model32, cross_entropy_loss, batches32).dtype == torch.float32


def test_operator_satisfies_the_protocol():
    model, batches = make_mlp(), make_batches((4,))
    op = hs.HessianOperator(model, cross_entropy_loss, batches)
    assert isinstance(op, hs.LinearOperatorLike)
    assert isinstance(
        hs.DistributedHessianOperator(model, cross_entropy_loss, batches), hs.LinearOperatorLike
    )


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
    import timm  # noqa: F401  (a dependency: missing, the test fails)
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
    """cache_graph=True reuses the first backward; results equal the uncached operator, and a change
    of any weight (also one outside the selected block) or BN statistic rebuilds the cache."""
    model, batches = make_bn_cnn(), make_batches((2, 5, 5))
    plain = hs.HessianOperator(model, cross_entropy_loss, batches, params="5")
    cached = hs.HessianOperator(model, cross_entropy_loss, batches, params="5", cache_graph=True)
    calls = []
    counting = hs.HessianOperator(
        model, lambda m, b: calls.append(1) or cross_entropy_loss(m, b), batches, params="5", cache_graph=True
    )
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(plain.size, dtype=torch.float64, generator=g)
        torch.testing.assert_close(cached @ v, plain @ v, rtol=1e-12, atol=1e-12)
        counting @ v
    assert len(calls) == 3  # one forward per batch, once
    for change in (lambda: model[0].weight.add_(0.5), lambda: model[1].running_var.mul_(1.5)):
        with torch.no_grad():
            change()  # the conv weight is not selected, but the head's Hessian depends on it
        v = torch.randn(plain.size, dtype=torch.float64, generator=g)
        torch.testing.assert_close(cached @ v, plain @ v, rtol=1e-12, atol=1e-12)
    counting @ v
    counting @ v
    assert len(calls) == 6  # rebuilt once after the changes, then reused
    counting.clear_cache()
    counting @ v
    assert len(calls) == 9
    with pytest.raises(ValueError, match="cache_graph=True needs the model in torch.float64"):
        hs.HessianOperator(model.float(), cross_entropy_loss, batches, dtype=torch.float64, cache_graph=True)
