"""Frequency-noise robustness and corruption metrics against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from alternet_pl.analysis import robustness
from alternet_pl.analysis.files import write_json
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


# ----------------------------------------------------------------------------- a model that really classifies

N_PIX = 32
# (axis, frequency index) of each class's pattern: four low-frequency ones, two high-frequency ones
PATTERNS = [
    ("x", 2, "cos"),
    ("x", 2, "sin"),
    ("y", 2, "cos"),
    ("y", 2, "sin"),
    ("x", 13, "cos"),
    ("y", 13, "cos"),
]


def class_patterns(n: int = N_PIX) -> torch.Tensor:
    """(classes, 3, n, n) zero-mean patterns with peak 1, mutually orthogonal, the same in each channel."""
    coord = torch.arange(n, dtype=torch.float64)
    out = []
    for axis, k, fn in PATTERNS:
        wave = (torch.cos if fn == "cos" else torch.sin)(2 * math.pi * k * coord / n)
        grid = wave[None, :].expand(n, n) if axis == "x" else wave[:, None].expand(n, n)
        out.append(grid.expand(3, n, n))
    return torch.stack(out)


class TemplateClassifier(nn.Module):
    """A classifier built by hand: logit k = scale * <x, pattern_k / ||pattern_k||> (a matched filter).

    On images ``amplitude * pattern_c`` (+ anything orthogonal to the patterns) it is always right;
    noise moves the logits only through its components at the patterns' frequencies.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        t = class_patterns()
        self.register_buffer("templates", (t / t.flatten(1).norm(dim=1)[:, None, None, None]).float())
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.einsum("bchw,kchw->bk", x.to(self.templates.dtype), self.templates)


def pattern_batches(amplitude: float, per_class: int = 10, batch: int = 20) -> list:
    """Images ``amplitude * unit pattern of the class + small white noise``, labels cycling over classes."""
    g = torch.Generator().manual_seed(1)
    t = class_patterns().float()
    t = t / t.flatten(1).norm(dim=1)[:, None, None, None]
    labels = torch.arange(len(PATTERNS)).repeat(per_class)
    x = amplitude * t[labels] + 0.002 * torch.randn(len(labels), 3, N_PIX, N_PIX, generator=g)
    return [(x[i : i + batch], labels[i : i + batch]) for i in range(0, len(labels), batch)]


def bands_touching_patterns(freqs, width=0.2) -> list[bool]:
    """Per band: does its mask (the official rule, written by loops) hold any pattern's frequency?"""
    spectrum = torch.fft.fftshift(torch.fft.fft2(class_patterns()[:, 0]), dim=(-2, -1)).abs().sum(0)
    support = spectrum.numpy() > 1e-6
    return [bool((loop_mask(N_PIX, f * math.pi, width) & support).any()) for f in freqs]


def test_frequency_noise_hurts_exactly_the_bands_holding_the_class_patterns():
    freqs = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    model = TemplateClassifier()
    data = pattern_batches(amplitude=0.5)
    res = robustness.frequency_noise_scan(model, data, freqs, eps=1.0, width=0.2, seed=0)
    assert res["clean_acc"] == 1.0  # it really classifies
    touching = bands_touching_patterns(freqs)
    assert [f for f, t in zip(freqs, touching) if t] == [0.1, 0.2, 0.8, 0.9]  # s = 0.2 rad, not 0.2 pi
    for f, t, d in zip(freqs, touching, res["delta"]):
        if t:  # noise at a pattern frequency flips some predictions: accuracy falls (noisy - clean < 0)
            assert d <= -0.05, (f, d)
        else:  # noise orthogonal to every pattern changes nothing
            assert d == 0.0, (f, d)
    np.testing.assert_allclose(res["acc"], res["clean_acc"] + res["delta"], atol=1e-12)
    # more noise, bigger drop, at a band holding the patterns; none at zero noise
    stronger = robustness.frequency_noise_accuracy(model, data, [0.2], eps=2.0, width=0.2, seed=0)
    assert stronger[0] < res["delta"][1] - 0.1
    assert robustness.frequency_noise_accuracy(model, data, [0.2], eps=0.0, width=0.2)[0] == 0.0
