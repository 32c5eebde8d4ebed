"""Landscape and trajectory callbacks, trajectory PCA vs NumPy's SVD, the official CSV reader."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from alternet_pl.analysis import landscape as ls
from alternet_pl.analysis.trajectory import flatten_trainable, pca_directions, polar
from alternet_pl.callbacks.landscape import LandscapeCallback, TrajectoryCallback
from alternet_pl.callbacks.options import AnalysisData, WeightDecayTerm
from alternet_pl.plots import landscape as lplots
from tests.conftest import assert_same, snapshot
from tests.test_landscape import brute_force, make_batches, make_cnn


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
    np.testing.assert_allclose(result.loss, result.nll + 0.05 * result.l2, rtol=1e-12)
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
    assert sorted(resumed.snapshots) == [0, 1, 2, 3]  # both stores survive a resumed fit
    for epoch, snap in cb.snapshots.items():
        kept = resumed.snapshots[epoch]
        np.testing.assert_array_equal(
            np.load(kept) if store == "disk" else kept, np.load(snap) if store == "disk" else snap
        )
    with pytest.raises(ValueError, match="at least 2"):
        TrajectoryCallback().run(module, data, tmp_path, epoch=0)


def test_trajectory_checkpoint_of_another_architecture(tmp_path):
    torch.save({"state_dict": {"model.w": torch.zeros(2, 1)}}, tmp_path / "other.ckpt")
    cb = TrajectoryCallback(checkpoints=[str(tmp_path / "other.ckpt")] * 2, data=AnalysisData(num_batches=1))
    with pytest.raises(ValueError, match="another architecture"):
        cb.run(StandIn(), StandInData(), tmp_path, epoch=0)


def test_end_to_end_fit_with_both_callbacks(tmp_path):
    import lightning.pytorch as pl

    from alternet_pl.data.synthetic import SyntheticDataModule
    from alternet_pl.training.module import ImageClassifier, Network
    from alternet_pl.training.recipe import OptimizerOptions, Recipe
    from alternet_pl.training.schedules import LRSchedule

    torch.manual_seed(0)
    recipe = Recipe(optimizer=OptimizerOptions(lr=1e-3), schedule=LRSchedule(warmup_epochs=0))
    module = ImageClassifier(Network("resnet_cifar_micro"), num_classes=10, recipe=recipe)
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
