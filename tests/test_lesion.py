"""Lesion study: removing a residual branch equals running the block as its shortcut."""

from __future__ import annotations

import pytest
import torch

from alternet_pl.analysis.features import select_taps
from alternet_pl.analysis.lesion import lesion_accuracy, lesioned
from alternet_pl.analysis.state import eval_mode
from tests.test_fourier import TinyCNN, batches, tiny_vit


def manual_without_b1(model: TinyCNN, x: torch.Tensor) -> torch.Tensor:
    return model.fc(model.b2(model.stem(x)).mean(dim=(2, 3)))


def test_lesion_equals_shortcut_forward_and_changes_output():
    model = TinyCNN().eval()
    x = torch.randn(4, 3, 8, 8)
    tap = select_taps(model, ["b1"])["b1"]
    with torch.no_grad():
        full = model(x)
        with lesioned(tap):
            cut = model(x)
        ref = manual_without_b1(model, x)
    torch.testing.assert_close(cut, ref)
    assert (cut - full).abs().max() > 1e-3
    assert not tap.branch._forward_hooks


def test_lesion_of_zero_branch_changes_nothing():
    model = TinyCNN()
    with torch.no_grad():
        model.b1.residual[-1].weight.zero_()
        model.b1.residual[-1].bias.zero_()
    data = batches()
    res = lesion_accuracy(model, data)
    assert res.drop["b1"] == 0.0 and res.acc["b1"] == res.clean_acc
    with eval_mode(model), torch.no_grad(), lesioned(select_taps(model, ["b1"])["b1"]):
        out = model(data[0][0])
    torch.testing.assert_close(out, model.eval()(data[0][0]), rtol=0, atol=0)


def test_accuracies_match_brute_force():
    model = TinyCNN(seed=3).eval()
    data = batches(bs=(7, 6, 5))
    res = lesion_accuracy(model, data)
    assert list(res.acc) == ["b1", "b2"]  # taps without a branch are skipped
    with torch.no_grad():
        x = torch.cat([b[0] for b in data])
        y = torch.cat([b[1] for b in data])
        clean = (model(x).argmax(-1) == y).double().mean().item()
        no_b1 = (manual_without_b1(model, x).argmax(-1) == y).double().mean().item()
    assert res.clean_acc == pytest.approx(clean) and res.acc["b1"] == pytest.approx(no_b1)
    assert res.drop["b1"] == pytest.approx(clean - no_b1)


def test_vit_attention_lesion_skips_attention():
    model = tiny_vit().eval()
    x = torch.randn(2, 3, 8, 8)
    tap = select_taps(model, ["blocks.0.attn"])["blocks.0.attn"]
    with torch.no_grad(), lesioned(tap):
        cut = model(x)
    with torch.no_grad():
        t = model._pos_embed(model.patch_embed(x))
        blk = model.blocks[0]
        t = t + blk.mlp(blk.norm2(t))  # attention step removed
        ref = model.forward_head(model.norm(t))
    torch.testing.assert_close(cut, ref)


def test_bad_layers_raise():
    with pytest.raises(ValueError, match="no residual branch"):
        lesion_accuracy(TinyCNN(), batches(1), layers=["stem"])
    with pytest.raises(ValueError, match="choose from"):
        lesion_accuracy(TinyCNN(), batches(1), layers=["b9"])
