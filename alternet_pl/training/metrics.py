"""`CalibrationMetric`: ``val/nll`` and ``val/ece`` as torchmetrics metrics (summed over batches and
devices), computed by `analysis.calibration`, the definition the corruption analyses use too."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torchmetrics import Metric

from alternet_pl.analysis.calibration import ECE_BINS, NLLAverage, calibration_counts, calibration_metrics
from alternet_pl.errors import InputError

__all__ = ["CalibrationMetric"]

CalibrationValue = Literal["acc", "nll", "ece"]


class CalibrationMetric(Metric):
    """Accuracy, NLL or ECE of logits against labels, from additive `calibration_counts`.

    Args:
        value: which number `compute` returns: "acc", "nll" or "ece".
        n_bins: equal-width confidence bins of the ECE (the authors: 10).
        nll_average: "per_batch" (mean of per-batch means, the authors) or "per_sample".
    Raises:
        ValueError: an unknown ``value`` / ``nll_average`` or ``n_bins`` < 1.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(
        self, value: CalibrationValue = "ece", n_bins: int = ECE_BINS, nll_average: NLLAverage = "per_batch"
    ) -> None:
        super().__init__()
        checks = (("value", value, CalibrationValue), ("nll_average", nll_average, NLLAverage))
        for name, given, options in checks:
            if given not in get_args(options):
                raise InputError(f"{name}={given!r}; valid values are {get_args(options)}")
        if not isinstance(n_bins, int) or n_bins < 1:
            raise InputError(f"n_bins={n_bins!r} must be a positive integer (the authors use {ECE_BINS})")
        self.value, self.n_bins, self.nll_average = value, n_bins, nll_average
        for key in ("n", "correct", "nll", "batch_nll", "batches"):
            self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for key in ("bin_n", "bin_conf", "bin_correct"):
            self.add_state(key, default=torch.zeros(n_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        for key, value in calibration_counts(logits.detach(), labels, self.n_bins).items():
            setattr(self, key, getattr(self, key) + value.to(getattr(self, key).dtype))

    def compute(self) -> torch.Tensor:
        counts = {k: getattr(self, k) for k in ("n", "correct", "nll", "batch_nll", "batches")}
        counts |= {k: getattr(self, k) for k in ("bin_n", "bin_conf", "bin_correct")}
        return torch.tensor(calibration_metrics(counts, self.nll_average)[self.value], dtype=torch.float64)
