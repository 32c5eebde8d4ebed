"""Loss landscape: every grid cell vs brute-force perturbed copies, normalisation, zeroing, restore, DDP."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alternet_pl.analysis import landscape as ls
from alternet_pl.analysis.loss import cross_entropy_loss
from alternet_pl.analysis.weight_decay import WeightDecayLoss
from tests.conftest import assert_same, make_small_cnn, snapshot
from tests.conftest import make_batches as make_float_batches
from tests.distributed import run_distributed


def make_cnn(seed: int = 0) -> nn.Module:
    return make_small_cnn(seed)


def make_batches(sizes=(5, 7, 4), seed: int = 1) -> list:
    return make_float_batches((3, 6, 6), sizes, seed)


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


def test_every_cell_matches_brute_force_and_state_is_restored():
    model = make_cnn().train()  # train mode on entry: the grid must still evaluate in eval mode
    batches = make_batches()
    dirs = ls.random_directions(model, n=2, seed=3)
    coords = [np.linspace(-1.0, 1.0, 3), [-0.5, 0.0, 0.25, 0.7]]
    before = snapshot(model)
    out = ls.evaluate_grid(model, cross_entropy_loss, batches, dirs, coords)
    assert_same(before, snapshot(model))
    assert out.loss.shape == out.acc.shape == (3, 4)
    for i, a in enumerate(coords[0]):
        for j, b in enumerate(coords[1]):
            loss, acc = brute_force(model, batches, dirs, (a, b))
            assert out.loss[i, j] == pytest.approx(loss, rel=1e-9)
            assert out.acc[i, j] == pytest.approx(acc, abs=1e-12)
    centre, _ = brute_force(model, batches, dirs, (0.0, 0.0))
    assert out.loss[1, 1] == pytest.approx(centre, rel=1e-12)
    assert len({round(v, 6) for v in out.loss.ravel()}) > 6  # the directions really move the loss
    assert out.nonfinite_cells == [] and out.notes == []


def test_one_direction_and_weight_norm_term():
    """WeightDecayLoss: loss = nll + wd * sum_p ||theta_p||_2 over every parameter; nll and penalty apart."""
    model = make_cnn()
    batches = make_batches((6,))
    (d,) = ls.random_directions(model, n=1, seed=0)
    axis = np.array([-0.4, 0.0, 0.9])
    out = ls.evaluate_grid(model, WeightDecayLoss(cross_entropy_loss, 0.05), batches, [d], [axis])
    for i, a in enumerate(axis):
        nll, _ = brute_force(model, batches, [d], (a,))
        l2 = sum((p.detach() + a * d[n]).norm().item() for n, p in model.named_parameters())
        assert out.nll[i] == pytest.approx(nll, rel=1e-9)
        assert out.penalty[i] == pytest.approx(0.05 * l2, rel=1e-9)
        assert out.loss[i] == pytest.approx(nll + 0.05 * l2, rel=1e-9)
    plain = ls.evaluate_grid(model, cross_entropy_loss, batches, [d], [axis])
    assert plain.penalty is None and np.array_equal(plain.loss, plain.nll)
    np.testing.assert_allclose(plain.nll, out.nll, rtol=1e-12)


def test_cells_record_the_standard_error_of_their_loss():
    """loss_stderr = std(per-sample losses, ddof=1) / sqrt(n) of the perturbed model, batches pooled;
    the same with a weight-decay term (a constant per cell); None without per-sample losses."""
    model = make_cnn()
    batches = make_batches((5, 7, 4))
    (d,) = ls.random_directions(model, n=1, seed=2)
    axis = np.array([-0.6, 0.0, 0.8])
    out = ls.evaluate_grid(model, cross_entropy_loss, batches, [d], [axis])
    decayed = ls.evaluate_grid(model, WeightDecayLoss(cross_entropy_loss, 0.05), batches, [d], [axis])
    for i, a in enumerate(axis):
        m = copy.deepcopy(model).eval()
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.add_(a * d[name])
            losses = torch.cat([F.cross_entropy(m(x), y, reduction="none") for x, y in batches]).double()
        want = float(losses.std(unbiased=True) / math.sqrt(len(losses)))
        assert out.loss_stderr[i] == pytest.approx(want, rel=1e-6)
        assert decayed.loss_stderr[i] == pytest.approx(want, rel=1e-6)
    assert len(set(np.round(out.loss_stderr, 9))) == 3  # it moves with the cell

    def mean_only(model, batch):
        return cross_entropy_loss(model, batch)[:3]

    assert ls.evaluate_grid(model, mean_only, batches, [d], [axis]).loss_stderr is None


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


def test_official_norm_perturbs_the_cls_token():
    """norm="official" zeroes what the official code zeroes: tensors with < 2 dims and names holding
    "pos_embed" / "relative_position" (and our "rel_pos"); the CLS token and other tables move."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=8, patch_size=2, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    (d,) = ls.random_directions(vit, n=1, seed=0, norm="official")
    for name in ("pos_embed", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "head.bias"):
        assert torch.count_nonzero(d[name]) == 0, name
    cls = vit.cls_token.detach()
    assert torch.count_nonzero(d["cls_token"]) == cls.numel()
    # the official normalisation across dim 0: for a (1, 1, D) token, |d| = |theta| entry by entry
    # (up to the 1e-7 in its denominator, against Gaussian draws of size ~1)
    torch.testing.assert_close(d["cls_token"].abs(), cls.abs(), rtol=1e-4, atol=0)
    (t,) = ls.random_directions(Tables(), n=1, seed=0, norm="official")
    assert torch.count_nonzero(t["table"]) == 32  # a (1, N, D) table under another name moves
    assert torch.count_nonzero(t["rel_pos_bias"]) == 0
    (f,) = ls.random_directions(vit, n=1, seed=0, norm="filter")  # the default rule zeroes the token
    assert torch.count_nonzero(f["cls_token"]) == 0


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
    assert np.isnan(out.loss[0]) and out.loss[1] == -np.inf
    np.testing.assert_allclose(out.loss[2:], [0.0, math.log(2.0)], rtol=1e-12)
    assert out.nonfinite_cells == [(-2.0,), (-1.0,)]
    assert np.isnan(out.acc).all() and "num_correct" in out.notes[0]
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
    return {"loss": out.loss, "acc": out.acc, "calls": len(calls), "shard_error": shard_error}


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
        np.testing.assert_allclose(r["loss"], single.loss, rtol=1e-12)
        np.testing.assert_array_equal(r["acc"], single.acc)
    assert [r["calls"] for r in ranks] == [5 * 3, 4 * 3]  # 9 cells x 3 batches split 5 / 4


def test_real_micro_models():
    import timm

    import alternet_pl.models  # noqa: F401  (a model that fails to build fails the test, never skips it)

    model = timm.create_model("alternet_cifar_micro", num_classes=10)
    model.eval()
    dirs = ls.random_directions(model, n=2, seed=0)
    rel = [n for n in dirs[0] if "rel_pos" in n]
    assert rel and all(torch.count_nonzero(dirs[0][n]) == 0 for n in rel)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g))]
    before = snapshot(model)
    out = ls.evaluate_grid(model, cross_entropy_loss, batches, dirs, [[-0.5, 0.0, 0.5]] * 2)
    assert_same(before, snapshot(model))
    assert np.isfinite(out.loss).all()
    with torch.no_grad():
        centre = F.cross_entropy(model(batches[0][0]), batches[0][1]).item()
    assert out.loss[1, 1] == pytest.approx(centre, rel=1e-5)
