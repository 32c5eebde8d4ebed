"""ECE bins are right-closed, (k/n, (k+1)/n], as the CHANGELOG and the official counts have them:
confidences exactly on a bin edge decide it (binary-exact edges, so float rounding cannot)."""

import math

import pytest
import torch

from alternet_pl.analysis.calibration import calibration_counts, calibration_metrics, confidence_bins


def test_confidence_on_a_bin_edge_belongs_to_the_lower_bin():
    conf = torch.tensor([0.0, 0.125, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    assert confidence_bins(conf, 4).tolist() == [0, 0, 0, 1, 2, 3]


def test_ece_with_a_confidence_on_an_edge_matches_the_hand_count():
    """Two samples, 4 bins: confidence 0.5 (equal logits, predicted class 0, right) lies in bin 1,
    (0.25, 0.5]; confidence 0.6 (wrong) in bin 2. ECE = (|1 - 0.5| + |0 - 0.6|) / 2 = 0.55
    (left-closed bins would put both in [0.5, 0.75): |1 - 1.1| / 2 = 0.05)."""
    logits = torch.tensor([[0.0, 0.0], [math.log(0.6 / 0.4), 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    counts = calibration_counts(logits, labels, n_bins=4)
    assert counts["bin_n"].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert calibration_metrics(counts)["ece"] == pytest.approx(0.55, abs=1e-12)
