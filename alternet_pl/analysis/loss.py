"""The default analysis loss: clean mean cross-entropy, batch size and correct count."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cross_entropy_loss(model: nn.Module, batch) -> tuple[torch.Tensor, int, torch.Tensor]:
    """`loss_fn(model, batch) -> (loss_mean, num_samples, num_correct)` for `(images, labels)` batches.

    Labels may be class indices or soft targets (rows of probabilities, e.g. after mixup).
    """
    images, labels = batch[0], batch[1]
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    hard = labels.argmax(dim=-1) if labels.ndim == 2 else labels  # soft (mixup) targets: their argmax
    correct = (logits.detach().argmax(dim=-1) == hard).sum()
    return loss, labels.shape[0], correct
