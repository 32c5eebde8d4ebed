"""The small shared pieces of the analyses: weight-decay forms, parameter selection, train/eval flags,
the progress-bar rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alternet_pl.analysis import progress
from alternet_pl.analysis.loss import cross_entropy_loss
from alternet_pl.analysis.params import trainable_parameters
from alternet_pl.analysis.state import eval_mode, training_flags
from alternet_pl.analysis.weight_decay import WeightDecayLoss, weight_penalty
from tests.conftest import make_batches, make_mlp


def test_weight_penalty_forms_by_hand():
    model = make_mlp()
    model[0].weight.requires_grad_(False)  # frozen tensors count too: the function is the model's
    with torch.no_grad():
        model[2].bias.zero_()
    tensors = [p.detach() for p in model.parameters()]
    norm = sum(float(t.norm()) for t in tensors)
    l2 = 0.5 * sum(float((t**2).sum()) for t in tensors)
    assert weight_penalty(model, "norm").item() == pytest.approx(norm, rel=1e-12)
    assert weight_penalty(model, "l2").item() == pytest.approx(l2, rel=1e-12)
    batch = make_batches((4,))[0]
    loss, n, correct, per_sample = cross_entropy_loss(model, batch)
    wrapped = WeightDecayLoss(cross_entropy_loss, 0.05, "norm")(model, batch)
    assert wrapped[0].item() == pytest.approx(loss.item() + 0.05 * norm, rel=1e-12)
    assert wrapped[1:3] == (n, correct) and torch.equal(wrapped[3], per_sample)
    assert per_sample.mean().item() == pytest.approx(loss.item(), rel=1e-12)
    (g,) = torch.autograd.grad(wrapped[0], [model[2].bias], allow_unused=True)
    assert torch.isfinite(g).all()  # the zero tensor adds no NaN derivative
    for bad in (lambda: weight_penalty(model, "l1"), lambda: WeightDecayLoss(cross_entropy_loss, -1.0)):
        with pytest.raises(ValueError, match="l1|coefficient=-1"):
            bad()


def test_parameter_selection():
    model = make_mlp()
    model[0].bias.requires_grad_(False)
    assert list(trainable_parameters(model)) == ["0.weight", "2.weight", "2.bias"]
    assert list(trainable_parameters(model, "2")) == ["2.weight", "2.bias"]
    assert list(trainable_parameters(model, [model[0], "2.bias"])) == ["0.weight", "2.bias"]
    with pytest.raises(ValueError, match="no trainable parameters selected by '0.bias'"):
        trainable_parameters(model, "0.bias")
    with pytest.raises(TypeError, match="name prefixes"):
        trainable_parameters(model, [3])


def test_training_flags_come_back_even_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.BatchNorm1d(2))
    model[1].eval()  # a mixed state must come back as it was, not as model.train()
    flags = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not any(m.training for m in model.modules())
        raise RuntimeError
    assert [m.training for m in model.modules()] == flags
    with training_flags(model):
        model.eval()
    assert [m.training for m in model.modules()] == flags


def test_progress_is_quiet_without_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert progress.quiet()
    assert progress.progress(range(3), desc="x").disable
    assert list(progress.progress(range(3))) == [0, 1, 2]
