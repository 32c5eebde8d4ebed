"""HessianCallback: results against dense references, files, untouched training state, DDP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alternet_pl.analysis import hessian as hs
from alternet_pl.analysis.loss import cross_entropy_loss
from alternet_pl.analysis.weight_decay import WeightDecayLoss
from alternet_pl.callbacks.options import (
    AnalysisData,
    DensityOptions,
    EigenOptions,
    SpectrumOptions,
    TraceOptions,
    WeightDecayTerm,
)
from tests.conftest import assert_same, dense_hessian, make_batches, make_mlp, snapshot


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


def test_callback_results_files_and_untouched_state(tmp_path):
    from alternet_pl.callbacks.hessian import HessianCallback
    from alternet_pl.registry import ANALYSES, import_object

    assert import_object(ANALYSES["hessian"].callback) is HessianCallback
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
    op = hs.HessianOperator(module.model, WeightDecayLoss(cross_entropy_loss, 0.05, "norm"), batches)
    assert cb.settings()["weight_decay"] == {"coefficient": 0.05, "form": "norm"}
    assert result.spectrum_which == "LM" and result.spectrum.shape == (3, 2)
    assert result.top_eig == pytest.approx(float(hs.top_eigenvalues(op, tol=1e-9).eigenvalues[0]), rel=1e-7)


def test_callback_bad_arguments():
    from alternet_pl.callbacks.hessian import HessianCallback

    for kwargs in ({"dtype": "half"}, {"mode": "x"}):
        with pytest.raises(ValueError, match="HessianOptions"):
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
    from alternet_pl.training.module import ImageClassifier, Network

    module = ImageClassifier(Network("alternet_cifar_micro"), num_classes=10)
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
    op = hs.DistributedHessianOperator(model, cross_entropy_loss, batches[rank::world])
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
            model, cross_entropy_loss, batches, k=1, tol=1e-9, max_iter=43
        ).eigenvalues,
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


def test_blockwise_covers_every_transformer_step_and_alternet_block():
    """Block-wise mode finds the attention and MLP steps of timm blocks (whose drop-path branch
    holds no parameters) and every AlterNet block; together they hold all block parameters."""
    import timm

    import alternet_pl.models  # noqa: F401
    from alternet_pl.analysis.hessian.run import residual_blocks as _blocks

    vit = timm.create_model("vit_cifar_micro", num_classes=10)
    blocks = _blocks(vit)
    assert [t.kind for _, t in blocks] == ["msa", "mlp"] * len(vit.blocks)
    covered = {id(p) for _, t in blocks for m in t.block_modules() for p in m.parameters()}
    assert covered == {id(p) for p in vit.blocks.parameters()}
    alt = timm.create_model("alternet_cifar_micro", num_classes=10)
    names = [n for n, _ in _blocks(alt)]
    assert names == [f"stages.{i}.{j}" for i, s in enumerate(alt.stages) for j in range(len(s))]
