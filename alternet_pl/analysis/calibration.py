"""Accuracy, NLL and ECE from additive counts: the one definition shared by ``val/nll`` / ``val/ece`` of
`ImageClassifier` and the corruption analyses.

ECE (Guo et al. 2017) = sum_b |correct_b - sum of confidences_b| / n over ``n_bins`` equal-width confidence
bins; the authors (``ops/tests.py``) use 10. A bin is right-closed, (k/n_bins, (k+1)/n_bins], as the official
counts and accuracies are (their confidence sums use [k, k+1) bins, which drops a confidence of exactly 1.0:
not replicated). NLL is the mean over samples ("per_sample") or the mean of per-batch means ("per_batch",
the official ``AverageMeter`` over batches); they differ only when batches differ in size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from alternet_pl.analysis.loss import hard_labels
from alternet_pl.errors import InputError

__all__ = ["ECE_BINS", "NLLAverage", "calibration_counts", "calibration_metrics", "confidence_bins"]

ECE_BINS = 10  # the authors' ops/tests.py: bins=np.linspace(0.0, 1.0, 11)
NLLAverage = Literal["per_batch", "per_sample"]


def confidence_bins(conf: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin index of each confidence in [0, 1]: bin k holds (k/n_bins, (k+1)/n_bins]; 0 goes to bin 0."""
    return (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)


def calibration_counts(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> dict:
    """Additive statistics of one batch (sum two batches' dicts key by key to merge them).

    Args:
        logits: (B, C) class scores; softmax is taken in float64.
        labels: (B,) class indices, or (B, C) soft targets (their argmax is the label).
        n_bins: equal-width confidence bins of the ECE.
    Returns:
        float64 tensors on ``logits``' device (float32 on MPS): ``n``, ``correct``, ``nll`` (sum over
        samples), ``batch_nll`` (this batch's mean NLL), ``batches`` (1), ``bin_n``, ``bin_conf``,
        ``bin_correct`` (each (n_bins,)).
    Raises:
        ValueError: ``n_bins`` < 1 or logits / labels of mismatched shapes.
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise InputError(f"n_bins={n_bins!r} must be a positive integer (the authors use {ECE_BINS})")
    labels = hard_labels(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise InputError(
            f"logits (B, C) and labels (B,) expected, got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    dtype = torch.float32 if logits.device.type == "mps" else torch.float64
    logp = F.log_softmax(logits.to(dtype), dim=-1)
    conf, pred = logp.exp().max(dim=-1)
    hit = (pred == labels).to(dtype)
    nll = -logp.gather(1, labels[:, None]).squeeze(1)
    idx = confidence_bins(conf, n_bins)

    def scalar(value) -> torch.Tensor:
        return torch.as_tensor(value, dtype=dtype, device=logits.device)

    zeros = torch.zeros(n_bins, dtype=dtype, device=logits.device)
    return {
        "n": scalar(labels.shape[0]),
        "correct": hit.sum(),
        "nll": nll.sum(),
        "batch_nll": nll.mean() if labels.numel() else scalar(0.0),
        "batches": scalar(1.0 if labels.numel() else 0.0),
        "bin_n": zeros.index_add(0, idx, torch.ones_like(conf)),
        "bin_conf": zeros.index_add(0, idx, conf),
        "bin_correct": zeros.index_add(0, idx, hit),
    }


def calibration_metrics(counts: Mapping, nll_average: NLLAverage = "per_sample") -> dict[str, float]:
    """``{"acc", "nll", "ece"}`` from summed `calibration_counts` (tensors or numbers / arrays).

    Raises:
        ValueError: no samples were counted, or an unknown ``nll_average``.
    """
    if nll_average not in get_args(NLLAverage):
        raise InputError(f"nll_average={nll_average!r}; valid values are {get_args(NLLAverage)}")
    n = float(counts["n"])
    if n == 0:
        raise InputError("no samples were evaluated (empty data)")
    correct, conf = (torch.as_tensor(counts[k], dtype=torch.float64) for k in ("bin_correct", "bin_conf"))
    if nll_average == "per_batch":
        nll = float(counts["batch_nll"]) / float(counts["batches"])
    else:
        nll = float(counts["nll"]) / n
    gap = correct.cpu() - conf.cpu()
    return {"acc": float(counts["correct"]) / n, "nll": nll, "ece": float(gap.abs().sum()) / n}
