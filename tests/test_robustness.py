"""Frequency-noise robustness and corruption metrics against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from alternet_pl.analysis import robustness
from alternet_pl.analysis.results import write_json
from tests.test_fourier import TinyCNN, batches, loop_mask


class BandDetector(nn.Module):
    """Predicts class 1 when the input has energy in one band (mask built by loops), else 0."""

    def __init__(self, f_pi: float, n: int = 32) -> None:
        super().__init__()
        self.register_buffer("mask", torch.from_numpy(loop_mask(n, f_pi * math.pi, 0.2)))

    def forward(self, x):
        spec = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1)).abs() ** 2
        e = (spec * self.mask).sum(dim=(1, 2, 3))
        total = spec.sum(dim=(1, 2, 3))
        # class 1 iff the band holds more than float32 round-off (1e-6 of the total energy)
        return torch.stack([1e-6 * total, e], dim=1)


def test_noise_lands_in_its_band_only():
    data = [(torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)) for _ in range(2)]
    res = robustness.frequency_noise_scan(BandDetector(0.9), data, [0.1, 0.5, 0.9], eps=0.1, width=0.2)
    assert res["clean_acc"] == 1.0
    np.testing.assert_array_equal(res["delta"], [0.0, 0.0, -1.0])
    low = robustness.frequency_noise_accuracy(BandDetector(0.1), data, [0.1, 0.5, 0.9], eps=0.1, width=0.2)
    np.testing.assert_array_equal(low, [-1.0, 0.0, 0.0])


def test_zero_eps_and_seed_determinism():
    model = TinyCNN()
    data = batches()
    zero = robustness.frequency_noise_accuracy(model, data, [0.2, 0.9], 0.0, 0.2)
    np.testing.assert_array_equal(zero, [0, 0])
    a = robustness.frequency_noise_accuracy(model, data, [0.2, 0.9], eps=2.0, width=0.5, seed=3)
    b = robustness.frequency_noise_accuracy(model, data, [0.2, 0.9], eps=2.0, width=0.5, seed=3)
    np.testing.assert_array_equal(a, b)


class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float64)

    def forward(self, idx):
        return self.logits[idx]


def test_acc_nll_ece_by_hand():
    logits = [[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 0.5]]
    labels = torch.tensor([0, 0, 1, 1])
    model = FixedLogits(logits)
    data = [(torch.tensor([0, 1]), labels[:2]), (torch.tensor([2, 3]), labels[2:])]
    m = robustness.metrics_from_counts(robustness.classification_counts(model, data, n_bins=10))
    p = torch.softmax(torch.tensor(logits, dtype=torch.float64), -1)
    conf = p.max(-1).values.numpy()  # 0.881, 0.731, 0.953, 0.622
    hits = np.array([1, 0, 0, 1])
    nll = -np.mean([math.log(p[i, int(labels[i])]) for i in range(4)])
    # width-0.1 bins: 0.881 -> (0.8,0.9], 0.731 -> (0.7,0.8], 0.953 -> (0.9,1], 0.622 -> (0.6,0.7]
    ece = np.sum(np.abs(hits - conf)) / 4
    assert m["acc"] == 0.5 and m["nll"] == pytest.approx(nll) and m["ece"] == pytest.approx(ece)
    both_in_one_bin = robustness.metrics_from_counts(
        robustness.classification_counts(
            FixedLogits([[2.0, 0.0], [0.0, 2.0]]), [(torch.tensor([0, 1]), torch.tensor([0, 0]))], n_bins=10
        )
    )
    assert both_in_one_bin["ece"] == pytest.approx(abs(0.5 - 0.8808), abs=1e-4)  # |acc_b - conf_b|


def test_mce_by_hand(tmp_path):
    metrics = {"fog": {1: {"acc": 0.9}, 2: {"acc": 0.7}}, "snow": {2: {"acc": 0.5}, 1: {"acc": 0.8}}}
    errors = robustness.corruption_errors(metrics)
    assert errors == {"fog": pytest.approx([0.1, 0.3]), "snow": pytest.approx([0.2, 0.5])}
    assert robustness.mean_corruption_error(errors) == pytest.approx((0.1 + 0.3 + 0.2 + 0.5) / 4)
    base_errors = {"fog": [0.2, 0.4], "snow": [0.35, 0.35], "frost": [0.5, 0.5]}
    base_file = write_json(tmp_path / "epoch=000.json", {"errors": base_errors})
    base = robustness.load_baseline_errors(base_file)
    mce, ce = robustness.relative_ce(errors, base)
    assert ce == {"fog": pytest.approx(0.4 / 0.6), "snow": pytest.approx(0.7 / 0.7)}
    assert mce == pytest.approx((0.4 / 0.6 + 1.0) / 2)
    with pytest.raises(ValueError, match=r"\['zoom_blur'\] are not in the baseline"):
        robustness.relative_ce({"zoom_blur": [0.1, 0.2], "fog": [0.1, 0.2]}, base)
    with pytest.raises(ValueError, match=r"severities \[1, 2\] here vs \[3, 4\]"):
        robustness.relative_ce(errors, base, severities=[1, 2], baseline_severities=[3, 4])
    with pytest.raises(ValueError, match="severities"):
        robustness.relative_ce({"fog": [0.1]}, base)
    with pytest.raises(FileNotFoundError, match="baseline"):
        robustness.load_baseline_errors(tmp_path / "nope.json")


def test_evaluate_subsets_keeps_order():
    model = FixedLogits([[2.0, 0.0], [0.0, 2.0]])
    subsets = {
        ("b", 1): [(torch.tensor([0, 1]), torch.tensor([0, 1]))],
        ("a", 2): [(torch.tensor([0, 1]), torch.tensor([1, 1]))],
    }
    out = robustness.evaluate_subsets(model, subsets)
    assert list(out) == [("b", 1), ("a", 2)] and out[("b", 1)]["acc"] == 1.0 and out[("a", 2)]["acc"] == 0.5
