"""The one clean loss of the analyses: mean cross-entropy, batch size and correct count.

`ImageClassifier.eval_loss` calls it too, so training's evaluation and every analysis measure the
same function. Add a weight-decay term with `alternet_pl.analysis.weight_decay.WeightDecayLoss`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["cross_entropy_loss", "hard_labels"]


def hard_labels(labels: torch.Tensor) -> torch.Tensor:
    """Class indices of `labels`: (B,) indices as they are, (B, C) soft targets (Mixup / CutMix, smoothing)
    by their argmax. The one place every accuracy and calibration count turns soft targets into classes."""
    return labels.argmax(dim=-1) if labels.ndim == 2 else labels


def cross_entropy_loss(model: nn.Module, batch: Any) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """`loss_fn(model, batch) -> (loss_mean, num_samples, num_correct, per_sample_losses)` for
    `(images, labels)` batches.

    Labels may be class indices or soft targets (rows of probabilities, e.g. after mixup; their
    argmax counts as the correct class). No label smoothing, no augmentation. The per-sample losses
    (shape (num_samples,), their mean is loss_mean) let the landscape record each cell's standard
    error; the Hessian uses loss_mean only.
    """
    images, labels = batch[0], batch[1]
    logits = model(images)
    per_sample = F.cross_entropy(logits, labels, reduction="none")
    correct = (logits.detach().argmax(dim=-1) == hard_labels(labels)).sum()
    return per_sample.mean(), labels.shape[0], correct, per_sample
