"""Loss landscape: every grid cell vs brute-force perturbed copies, normalisation, restore, DDP, PCA, CSV."""

from __future__ import annotations

import copy
import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alternet_pl.analysis import landscape as ls
from alternet_pl.analysis.loss import cross_entropy_loss
from alternet_pl.analysis.trajectory import flatten_trainable, pca_directions, polar
from alternet_pl.callbacks.landscape import LandscapeCallback, TrajectoryCallback
from alternet_pl.callbacks.options import AnalysisData, WeightDecayTerm
from alternet_pl.plots import landscape as lplots
from tests.distributed import run_distributed


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(self.drop(x.mean(dim=(2, 3))))


def make_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN().double()
    with torch.no_grad():  # non-trivial BN running statistics and affine parameters
        for _ in range(3):
            model(torch.randn(8, 3, 6, 6, dtype=torch.float64) * 2 + 0.5)
        for m in (model.bn1, model.bn2):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.3, 0.3)
    return model


def make_batches(sizes=(5, 7, 4), seed: int = 1) -> list:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, 3, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
        for n in sizes
    ]


def brute_force(model: nn.Module, batches: list, dirs: list, point: tuple) -> tuple[float, float]:
    """Mean loss and accuracy of an independently perturbed deep copy (sum over all samples / N)."""
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(p + sum(c * d[name] for c, d in zip(point, dirs)))
        total = correct = n = 0
        for x, y in batches:
            logits = m(x)
            total += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
    return total / n, correct / n


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "rng": torch.get_rng_state().clone(),
        "np": np.random.get_state()[1].copy(),
    }


def assert_same(a: dict, b: dict) -> None:
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    assert a["modes"] == b["modes"]
    assert torch.equal(a["rng"], b["rng"]) and np.array_equal(a["np"], b["np"])


def test_every_cell_matches_brute_force_and_state_is_restored():
    model = make_cnn().train()  # train mode on entry: the grid must still evaluate in eval mode
    batches = make_batches()
    dirs = ls.random_directions(model, n=2, seed=3)
    coords = [np.linspace(-1.0, 1.0, 3), [-0.5, 0.0, 0.25, 0.7]]
    before = snapshot(model)
    out = ls.evaluate_grid(model, cross_entropy_loss, batches, dirs, coords)
    assert_same(before, snapshot(model))
    assert out["loss"].shape == out["acc"].shape == (3, 4)
    for i, a in enumerate(coords[0]):
        for j, b in enumerate(coords[1]):
            loss, acc = brute_force(model, batches, dirs, (a, b))
            assert out["loss"][i, j] == pytest.approx(loss, rel=1e-9)
            assert out["acc"][i, j] == pytest.approx(acc, abs=1e-12)
    centre, _ = brute_force(model, batches, dirs, (0.0, 0.0))
    assert out["loss"][1, 1] == pytest.approx(centre, rel=1e-12)
    assert len({round(v, 6) for v in out["loss"].ravel()}) > 6  # the directions really move the loss
    assert out["nonfinite_cells"] == [] and out["notes"] == []


def test_one_direction_and_weight_norm_term():
    model = make_cnn()
    batches = make_batches((6,))
    (d,) = ls.random_directions(model, n=1, seed=0)
    axis = np.array([-0.4, 0.0, 0.9])
    out = ls.evaluate_grid(model, cross_entropy_loss, batches, [d], [axis], weight_decay=0.05)
    for i, a in enumerate(axis):
        nll, _ = brute_force(model, batches, [d], (a,))
        l2 = sum((p.detach() + a * d[n]).norm().item() for n, p in model.named_parameters())
        assert out["nll"][i] == pytest.approx(nll, rel=1e-9)
        assert out["l2"][i] == pytest.approx(l2, rel=1e-9)
        assert out["loss"][i] == pytest.approx(nll + 0.05 * l2, rel=1e-9)


def test_filter_normalisation_and_zeroed_tensors():
    model = make_cnn()
    params = dict(model.named_parameters())
    (d,) = ls.random_directions(model, n=1, seed=0, norm="filter")
    for name, p in params.items():
        if p.ndim < 2:
            assert torch.count_nonzero(d[name]) == 0, name
            continue
        dn = d[name].reshape(p.shape[0], -1).norm(dim=1)
        wn = p.detach().reshape(p.shape[0], -1).norm(dim=1)
        torch.testing.assert_close(dn, wn, rtol=1e-12, atol=0)
    (lay,) = ls.random_directions(model, n=1, seed=0, norm="layer")
    (off,) = ls.random_directions(model, n=1, seed=0, norm="official")
    (raw,) = ls.random_directions(model, n=1, seed=0, norm="none")
    w = params["conv2.weight"].detach()
    assert lay["conv2.weight"].norm().item() == pytest.approx(w.norm().item(), rel=1e-12)
    # official: one norm per position of the other dims, taken across dim 0 (eps 1e-7 in the denominator)
    torch.testing.assert_close(off["conv2.weight"].norm(dim=0), w.norm(dim=0), rtol=1e-5, atol=0)
    assert not torch.allclose(
        off["conv2.weight"].reshape(6, -1).norm(dim=1), w.reshape(6, -1).norm(dim=1), rtol=1e-3
    )
    # all four share the same Gaussian draw: directions agree up to per-slice positive scaling
    cos = F.cosine_similarity(raw["fc.weight"].reshape(-1), d["fc.weight"].reshape(-1), dim=0)
    assert 0.5 < cos.item() < 1.0
    (keep,) = ls.random_directions(model, n=1, seed=0, ignore="none")
    assert torch.count_nonzero(keep["bn1.weight"]) == 4
    assert torch.equal(keep["fc.weight"], d["fc.weight"])


class Tables(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(1, 4, 8))  # batch-broadcast table under an unknown name
        self.rel_pos_bias = nn.Parameter(torch.randn(7, 2))
        self.conv = nn.Conv1d(8, 1, 3)  # weight (1, 8, 3): a real layer, not a table


def test_vit_tables_are_zeroed():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=8, patch_size=2, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    (d,) = ls.random_directions(vit, n=1, seed=0)
    for name in ("pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"):
        assert torch.count_nonzero(d[name]) == 0, name
    qkv = vit.blocks[0].attn.qkv.weight.detach()
    torch.testing.assert_close(
        d["blocks.0.attn.qkv.weight"].norm(dim=1), qkv.norm(dim=1), rtol=1e-5, atol=1e-7
    )
    (t,) = ls.random_directions(Tables(), n=1, seed=0)
    assert torch.count_nonzero(t["table"]) == 0 and torch.count_nonzero(t["rel_pos_bias"]) == 0
    assert torch.count_nonzero(t["conv.weight"]) == 24


def test_seed_reproducible_and_global_rng_untouched():
    model = make_cnn()
    rng = torch.get_rng_state().clone()
    a = ls.random_directions(model, n=2, seed=5)
    b = ls.random_directions(model, n=2, seed=5)
    c = ls.random_directions(model, n=2, seed=6)
    assert torch.equal(rng, torch.get_rng_state())
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]) and torch.equal(a[1][k], b[1][k])
    assert not torch.equal(a[0]["conv1.weight"], c[0]["conv1.weight"])
    assert not torch.equal(a[0]["conv1.weight"], a[1]["conv1.weight"])


class Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2, 1, dtype=torch.float64))


def log_loss(model: nn.Module, batch) -> tuple[torch.Tensor, int]:
    return torch.log(model.w[0, 0]), len(batch[0])


def test_nan_cells_are_recorded_and_reported():
    model = Scalar()
    d = {"w": torch.tensor([[1.0], [0.0]], dtype=torch.float64)}
    axis = np.array([-2.0, -1.0, 0.0, 1.0])  # w = -1 (NaN), 0 (-inf), 1, 2
    with pytest.warns(RuntimeWarning, match=r"NaN/inf at 2 of 4 cells"):
        out = ls.evaluate_grid(model, log_loss, [(torch.zeros(3),)], [d], [axis])
    assert np.isnan(out["loss"][0]) and out["loss"][1] == -np.inf
    np.testing.assert_allclose(out["loss"][2:], [0.0, math.log(2.0)], rtol=1e-12)
    assert out["nonfinite_cells"] == [(-2.0,), (-1.0,)]
    assert np.isnan(out["acc"]).all() and "num_correct" in out["notes"][0]
    assert model.w.detach().tolist() == [[1.0], [1.0]]


def test_bad_inputs_raise_clear_errors():
    model, other = make_cnn(), Scalar()
    batches = make_batches((2,))
    dirs = ls.random_directions(model, n=2)
    axis = np.linspace(-1, 1, 3)
    with pytest.raises(ValueError, match="another architecture"):
        ls.evaluate_grid(model, cross_entropy_loss, batches, ls.random_directions(other, n=2), [axis, axis])
    bad = [dict(dirs[0], **{"fc.weight": torch.zeros(2, 6, dtype=torch.float64)}), dirs[1]]
    with pytest.raises(ValueError, match="shapes that differ"):
        ls.evaluate_grid(model, cross_entropy_loss, batches, bad, [axis, axis])
    with pytest.raises(ValueError, match="one 1-D sequence per direction"):
        ls.evaluate_grid(model, cross_entropy_loss, batches, dirs, [axis])
    with pytest.raises(ValueError, match="single 1-D array"):
        ls.evaluate_grid(model, cross_entropy_loss, batches, dirs[:1], axis)
    with pytest.raises(ValueError, match=r"coords\[1\] has shape \(2, 2\)"):
        ls.evaluate_grid(model, cross_entropy_loss, batches, dirs, [axis, np.zeros((2, 2))])
    with pytest.raises(ValueError, match="NaN or inf"):
        ls.evaluate_grid(model, cross_entropy_loss, batches, dirs, [axis, [0.0, np.nan]])
    with pytest.raises(ValueError, match="batches is empty"):
        ls.evaluate_grid(model, cross_entropy_loss, [], dirs, [axis, axis])
    with pytest.raises(TypeError, match="list of"):
        ls.evaluate_grid(model, cross_entropy_loss, batches, dirs[0], [axis])
    with pytest.raises(ValueError, match="norm='filters'"):
        ls.random_directions(model, norm="filters")
    with pytest.raises(ValueError, match="n=0"):
        ls.random_directions(model, n=0)
    with pytest.raises(ValueError, match="another architecture"):
        ls.directions_from_flat(model, np.zeros(3))


def _grid_on_rank() -> dict:
    calls = []

    def counting_loss(model, batch):
        calls.append(1)
        return cross_entropy_loss(model, batch)

    model = make_cnn()
    out = ls.evaluate_grid(
        model,
        counting_loss,
        make_batches(),
        ls.random_directions(model, n=2, seed=1),
        [np.linspace(-1, 1, 3), np.linspace(-1, 1, 3)],
    )
    import torch.distributed as dist

    shard = make_batches()[dist.get_rank() :: 2]  # a per-rank shard is a user error here
    try:
        ls.evaluate_grid(
            model, cross_entropy_loss, shard, ls.random_directions(model, 2, seed=1), [[0.0], [0.0]]
        )
        shard_error = ""
    except ValueError as err:
        shard_error = str(err)
    return {"loss": out["loss"], "acc": out["acc"], "calls": len(calls), "shard_error": shard_error}


def test_two_ranks_equal_one_process():
    ranks = run_distributed(_grid_on_rank, world_size=2)
    assert all("ranks hold different batches" in r["shard_error"] for r in ranks)
    model = make_cnn()
    single = ls.evaluate_grid(
        model,
        cross_entropy_loss,
        make_batches(),
        ls.random_directions(model, n=2, seed=1),
        [np.linspace(-1, 1, 3), np.linspace(-1, 1, 3)],
    )
    for r in ranks:
        np.testing.assert_allclose(r["loss"], single["loss"], rtol=1e-12)
        np.testing.assert_array_equal(r["acc"], single["acc"])
    assert [r["calls"] for r in ranks] == [5 * 3, 4 * 3]  # 9 cells x 3 batches split 5 / 4


@pytest.mark.parametrize("center", [False, True])
def test_pca_matches_numpy_svd(center):
    rng = np.random.default_rng(0)
    final = rng.standard_normal(53).astype(np.float32)
    snaps = [final + rng.standard_normal(53).astype(np.float32) * s for s in (3.0, 2.0, 1.0, 0.5, 0.0)]
    dirs, coords, explained = pca_directions(snaps, final, n=2, center=center, chunk=7)
    m = np.stack(snaps).astype(np.float64) - final
    if center:
        m = m - m.mean(axis=0)
    _, s, vt = np.linalg.svd(m, full_matrices=False)
    signs = np.sign(np.sum(dirs * vt[:2], axis=1))
    np.testing.assert_allclose(dirs, vt[:2] * signs[:, None], rtol=1e-9, atol=1e-12)
    raw = np.stack(snaps).astype(np.float64) - final
    np.testing.assert_allclose(coords, raw @ dirs.T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(explained, s[:2] ** 2 / np.sum(s**2), rtol=1e-9)
    assert np.all(coords[0] >= 0)
    angle, radius = polar(coords)
    np.testing.assert_allclose(radius * np.cos(angle), coords[:, 0], atol=1e-12)
    with pytest.raises(ValueError, match="another architecture"):
        pca_directions([final, final[:-1]], final)


def test_official_csv_reader(tmp_path):
    rows = []
    for y in (-1.0, 1.0):  # the official order: x varies fastest
        for x in (-1.0, 0.0, 1.0):
            rest = [0.0] * 19
            rest[0:5] = [x, y, 9.0, 100 + 10 * x + y, 2 + x * x + 0.1 * y]
            rest[7] = 0.5 - 0.1 * x
            rows.append(",".join(repr(v) for v in rest))
    path = tmp_path / "grid.csv"
    path.write_text("\n".join(rows) + "\n")
    g = lplots.read_official_csv(path)
    assert g["loss"].shape == (3, 2)
    np.testing.assert_allclose(g["x"], [-1, 0, 1])
    np.testing.assert_allclose(g["nll"][2, 0], 2 + 1 - 0.1)  # x = 1, y = -1
    np.testing.assert_allclose(g["acc"][0, 1], 0.6)
    np.testing.assert_allclose(g["loss"], g["nll"] + 0.05 * g["l2"])
    headed = tmp_path / "headed.csv"
    headed.write_text(",".join(lplots.OFFICIAL_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    np.testing.assert_array_equal(lplots.read_official_csv(headed)["loss"], g["loss"])
    (tmp_path / "short.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(ValueError, match="full 3x2 grid"):
        lplots.read_official_csv(tmp_path / "short.csv")
    z = g["loss"].copy()
    z[0, 0] = np.nan
    figs = [
        lplots.contour(g["x"], g["y"], z),
        lplots.heatmap(g["x"], g["y"], z),
        lplots.surface(g["x"], g["y"], z),
        lplots.side_by_side({"ours": g, "official": g}),
    ]
    assert all(len(f.axes) >= 1 for f in figs)
    plt.close("all")


# ---- callbacks -------------------------------------------------------------------------------------
class StandIn(nn.Module):
    """Minimal stand-in for ImageClassifier: .model, .weight_decay, .mixup_fn."""

    def __init__(self) -> None:
        super().__init__()
        self.model = make_cnn()
        self.weight_decay = 0.05
        self.mixup_fn = None


class StandInData:
    def __init__(self) -> None:
        self.calls = []

    def analysis_batches(self, split, num_batches, batch_size, augment, seed, mixup_fn):
        self.calls.append((split, augment))
        return make_batches((4,) * num_batches, seed=seed + 1)


def test_landscape_callback_writes_results(tmp_path):
    module, data = StandIn(), StandInData()
    before = snapshot(module)
    cb = LandscapeCallback(steps=5, span=0.5, dims=2, data=AnalysisData(num_batches=2))
    result = cb.run(module, data, tmp_path, epoch=3)
    assert_same(before, snapshot(module))
    out = tmp_path / "analysis" / "landscape"
    for f in (
        "epoch=003.json",
        "epoch=003.npz",
        "epoch=003.png",
        "epoch=003_heatmap.png",
        "epoch=003_surface.png",
        "epoch=003_curve.png",
    ):
        assert (out / f).exists(), f
    batches = make_batches((4, 4), seed=1)
    dirs = ls.random_directions(module.model, n=2, seed=0)
    centre, _ = brute_force(module.model, batches, dirs, (0.0, 0.0))
    assert result.center_loss == pytest.approx(centre, rel=1e-9)
    loss = np.load(out / "epoch=003.npz")["loss"]
    edge = np.concatenate([loss[0], loss[-1], loss[1:-1, 0], loss[1:-1, -1]])
    assert result.edge_increase == pytest.approx(np.mean(edge - centre), rel=1e-9)
    assert result.max_increase == pytest.approx(np.max(loss - centre), rel=1e-9)
    assert json.loads((out / "epoch=003.json").read_text())["scalars"]["center_loss"] == pytest.approx(centre)
    assert data.calls == [("val", False)]


def test_landscape_callback_1d_even_steps_and_paper_setting(tmp_path):
    module, data = StandIn(), StandInData()
    cb = LandscapeCallback(
        steps=4,
        dims=1,
        data=AnalysisData(split="train", augment=True, num_batches=1),
        weight_decay=WeightDecayTerm(0.05, "norm"),
    )
    result = cb.run(module, data, tmp_path, epoch=0)
    assert data.calls == [("train", True)]
    nll, _ = brute_force(module.model, make_batches((4,), seed=1), [], ())
    l2 = sum(p.detach().norm().item() for p in module.model.parameters())
    assert result.center_loss == pytest.approx(nll + 0.05 * l2, rel=1e-9)
    assert result.loss.shape == (4,)
    assert (tmp_path / "analysis" / "landscape" / "epoch=000.png").exists()
    with pytest.raises(ValueError, match="dims=3"):
        LandscapeCallback(dims=3)


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_trajectory_callback(tmp_path, store):
    module, data = StandIn(), StandInData()
    cb = TrajectoryCallback(store=store, steps=5, data=AnalysisData(num_batches=1))
    cb._dir = tmp_path / "weights"
    torch.manual_seed(0)
    for epoch in range(4):  # a fake training run: random walk of the weights
        cb.snapshot(module.model, epoch)
        with torch.no_grad():
            for p in module.model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    result = cb.run(module, data, tmp_path, epoch=4)
    path = result.path
    snaps = [np.load(s) if store == "disk" else s for s in cb.snapshots.values()]
    vecs, ref, _ = pca_directions(snaps, flatten_trainable(module.model))
    np.testing.assert_allclose(path, ref, rtol=1e-9)
    assert result.loss.shape == (5, 5) and np.isfinite(result.loss).all()
    assert (tmp_path / "analysis" / "trajectory" / "epoch=004_polar.png").exists()
    resumed = TrajectoryCallback(store=store)
    resumed.load_state_dict(cb.state_dict())
    assert sorted(resumed.snapshots) == ([0, 1, 2, 3] if store == "disk" else [])
    with pytest.raises(ValueError, match="at least 2"):
        TrajectoryCallback().run(module, data, tmp_path, epoch=0)


def test_trajectory_checkpoint_of_another_architecture(tmp_path):
    torch.save({"state_dict": {"model.w": torch.zeros(2, 1)}}, tmp_path / "other.ckpt")
    cb = TrajectoryCallback(checkpoints=[str(tmp_path / "other.ckpt")] * 2, data=AnalysisData(num_batches=1))
    with pytest.raises(ValueError, match="another architecture"):
        cb.run(StandIn(), StandInData(), tmp_path, epoch=0)


def test_real_micro_models():
    timm = pytest.importorskip("timm")
    try:
        import alternet_pl.models  # noqa: F401

        model = timm.create_model("alternet_cifar_micro", num_classes=10)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"alternet_cifar_micro not available yet: {err}")
    model.eval()
    dirs = ls.random_directions(model, n=2, seed=0)
    rel = [n for n in dirs[0] if "rel_pos" in n]
    assert rel and all(torch.count_nonzero(dirs[0][n]) == 0 for n in rel)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g))]
    before = snapshot(model)
    out = ls.evaluate_grid(model, cross_entropy_loss, batches, dirs, [[-0.5, 0.0, 0.5]] * 2)
    assert_same(before, snapshot(model))
    assert np.isfinite(out["loss"]).all()
    with torch.no_grad():
        centre = F.cross_entropy(model(batches[0][0]), batches[0][1]).item()
    assert out["loss"][1, 1] == pytest.approx(centre, rel=1e-5)


def test_end_to_end_fit_with_both_callbacks(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    try:
        from alternet_pl.data.synthetic import SyntheticDataModule
        from alternet_pl.module import ImageClassifier
    except ImportError as err:  # pragma: no cover
        pytest.skip(f"module/data not available: {err}")
    torch.manual_seed(0)
    module = ImageClassifier(model="resnet_cifar_micro", num_classes=10, warmup_epochs=0, lr=1e-3)
    data = SyntheticDataModule(num_train=32, num_val=16, batch_size=16)
    cbs = [
        LandscapeCallback(steps=3, span=0.5, data=AnalysisData(num_batches=1, batch_size=8)),
        TrajectoryCallback(steps=3, data=AnalysisData(num_batches=1, batch_size=8)),
    ]
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
        callbacks=cbs,
    )
    trainer.fit(module, datamodule=data)
    out = tmp_path / "analysis"
    summary = json.loads((out / "landscape" / "epoch=002.json").read_text())
    assert math.isfinite(summary["scalars"]["center_loss"])
    traj = np.load(out / "trajectory" / "epoch=002.npz")
    assert traj["epochs"].tolist() == [0, 1, 2] and np.allclose(traj["path"][-1], 0.0, atol=1e-6)
    assert (out / "trajectory" / "epoch=002_polar.png").exists()
