"""`freq_noise` (accuracy under band-limited noise, paper Fig. 2b) and `corruption` (CIFAR-C /
ImageNet-C accuracy, NLL, ECE, mean corruption error and mCE against a baseline run) callbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.freq import check_freq
from alternet_pl.analysis.records import CorruptionRecord, FreqNoiseRecord
from alternet_pl.analysis.robustness import (
    classification_counts,
    corruption_errors,
    evaluate_subsets,
    frequency_noise_scan,
    load_baseline_errors,
    load_baseline_severities,
    mean_corruption_error,
    metrics_from_counts,
    relative_ce,
)
from alternet_pl.analysis.state import eval_mode, to_device
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext
from alternet_pl.errors import InputError
from alternet_pl.plots import features as plots

__all__ = ["CorruptionCallback", "FreqNoiseCallback", "PAPER_FREQS"]

PAPER_FREQS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class FreqNoiseCallback(AnalysisCallback):
    """acc(noisy) - acc(clean) for sign noise limited to bands centred at ``freqs`` (units of pi).

    Args:
        freqs: band centres in units of pi, each in (0, 1].
        eps: noise amplitude in normalised-input units (official default 0.007).
        width: band half-width s in radians (official 0.2; it is added to f in radians).
        data, schedule, log_images, strict: see `AnalysisCallback`.
    """

    name = "freq_noise"

    def __init__(
        self,
        freqs: Sequence[float] = PAPER_FREQS,
        eps: float = 0.007,
        width: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for f in freqs:
            check_freq(f)
        self.freqs, self.eps, self.width = [float(f) for f in freqs], float(eps), float(width)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "freqs": self.freqs, "eps": self.eps, "width": self.width}

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> FreqNoiseRecord:
        res = frequency_noise_scan(model, batches, self.freqs, self.eps, self.width, self.data.seed)
        return FreqNoiseRecord(
            freqs=[float(f) for f in res["freqs"]],
            eps=self.eps,
            width=self.width,
            clean_acc=float(res["clean_acc"]),
            acc=[float(a) for a in res["acc"]],
            delta=[float(d) for d in res["delta"]],
        )

    def plot(self, record: FreqNoiseRecord, context: AnalysisContext) -> dict[str, Any]:
        return {"": plots.plot_freq_noise([(f"epoch {context.epoch}", record.freqs, record.delta)])}


class _OnDevice:
    """Iterate a DataLoader, moving each (x, y) batch to ``device``."""

    def __init__(self, loader: Iterable, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __iter__(self):
        for batch in self.loader:
            yield to_device(batch, self.device)


class CorruptionCallback(AnalysisCallback):
    """Accuracy, NLL and ECE on every (corruption, severity) of a CIFAR-C / ImageNet-C folder.

    Args:
        root: the CIFAR-10-C / CIFAR-100-C folder (``<corruption>.npy`` + ``labels.npy``) or ImageNet-C.
        corruptions: names (default: the 15 benchmark corruptions); severities: subset of 1..5.
        baseline: a baseline run's ``analysis/corruption/epoch=NNN.json``: adds mCE and CE per corruption.
        max_images: evaluate only the first images of each severity (quick runs; None: all).
        mean, std: input normalisation (None: the datamodule's ``mean``/``std``).
        eval_batch_size, num_workers, image_size: loading of the corrupted images.
        data: the clean batches the clean accuracy is measured on.
        schedule, log_images, strict: see `AnalysisCallback`.
    """

    name = "corruption"

    def __init__(
        self,
        root: str | None = None,
        corruptions: list[str] | None = None,
        severities: tuple[Literal[1, 2, 3, 4, 5], ...] = (1, 2, 3, 4, 5),
        baseline: str | None = None,
        max_images: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        image_size: int = 224,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if root is None:
            raise InputError(
                "corruption: give the corrupted data folder, e.g. --corruption.root data/CIFAR-100-C"
            )
        self.root, self.corruptions, self.severities = Path(root), corruptions, tuple(severities)
        self.baseline, self.max_images = baseline, max_images
        self.mean, self.std = mean, std
        self.eval_batch_size, self.num_workers, self.image_size = eval_batch_size, num_workers, image_size

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "root": str(self.root),
            "corruptions": self.corruptions,
            "severities": list(self.severities),
            "baseline": self.baseline,
            "max_images": self.max_images,
        }

    def _datamodule(self, context: AnalysisContext):
        from alternet_pl.data.corruptions import CorruptionDataModule

        mean = self.mean or getattr(context.datamodule, "mean", None)
        std = self.std or getattr(context.datamodule, "std", None)
        if mean is None or std is None:
            raise InputError(
                "corruption: unknown input normalisation; pass --corruption.mean and --corruption.std"
            )
        dm = CorruptionDataModule(
            self.root,
            mean,
            std,
            self.corruptions,
            self.severities,
            self.eval_batch_size,
            self.num_workers,
            self.max_images,
            self.image_size,
        )
        dm.setup()
        return dm

    def compute(
        self, model: nn.Module, loss_fn: Callable, batches: list, context: AnalysisContext
    ) -> CorruptionRecord:
        dm = self._datamodule(context)
        device = next(model.parameters()).device
        subsets = {key: _OnDevice(dm.loader(*key), device) for key in dm.keys}
        flat = evaluate_subsets(model, subsets)
        with eval_mode(model), torch.no_grad():
            clean = metrics_from_counts(classification_counts(model, batches))
        metrics: dict[str, dict[int, dict[str, float]]] = {}
        for (c, s), m in flat.items():
            metrics.setdefault(c, {})[s] = m
        errors = corruption_errors(metrics)
        mce = ce = None
        if self.baseline:
            mce, ce = relative_ce(
                errors,
                load_baseline_errors(self.baseline),
                list(self.severities),
                load_baseline_severities(self.baseline),
            )
        return CorruptionRecord(
            root=str(self.root),
            corruptions=list(metrics),
            severities=list(self.severities),
            max_images=self.max_images,
            clean={k: float(v) for k, v in clean.items()},
            metrics={c: {str(s): dict(m) for s, m in per.items()} for c, per in metrics.items()},
            errors=errors,
            acc=np.array([[metrics[c][s]["acc"] for s in self.severities] for c in metrics]),
            mean_corruption_error=mean_corruption_error(errors),
            mean_acc=float(np.mean([m["acc"] for m in flat.values()])),
            mean_nll=float(np.mean([m["nll"] for m in flat.values()])),
            mean_ece=float(np.mean([m["ece"] for m in flat.values()])),
            baseline=str(self.baseline) if self.baseline else None,
            mce=mce,
            ce=ce,
        )

    def plot(self, record: CorruptionRecord, context: AnalysisContext) -> dict[str, Any]:
        return {"": plots.plot_corruption(record.corruptions, record.severities, record.metrics, "acc")}
