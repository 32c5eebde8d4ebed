"""`freq_noise` (accuracy under band-limited noise, paper Fig. 2b) and `corruption` (CIFAR-C /
ImageNet-C accuracy, NLL, ECE, mean corruption error and mCE against a baseline run) callbacks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.baselines import (
    ALEXNET,
    alexnet_errors,
    alexnet_set_for,
    missing_clean_error,
    relative_mce,
)
from alternet_pl.analysis.files import read_json
from alternet_pl.analysis.records import CorruptionRecord, FreqNoiseRecord
from alternet_pl.analysis.robustness import (
    FreqNoiseOptions,
    classification_counts,
    corruption_errors,
    evaluate_subsets,
    load_baseline_errors,
    load_baseline_severities,
    mean_corruption_error,
    metrics_from_counts,
    relative_ce,
)
from alternet_pl.analysis.robustness import run as freq_noise_run
from alternet_pl.analysis.state import eval_mode, to_device
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext
from alternet_pl.data.corruptions import detect_layout
from alternet_pl.errors import InputError
from alternet_pl.plots import features as plots

log = logging.getLogger(__name__)

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
    run_analysis = staticmethod(freq_noise_run)

    def __init__(
        self,
        freqs: Sequence[float] = PAPER_FREQS,
        eps: float = 0.007,
        width: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.options = FreqNoiseOptions(
            freqs=tuple(freqs), eps=float(eps), width=float(width), seed=self.data.seed
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
        root: the CIFAR-10-C / CIFAR-100-C folder (``<corruption>.npy`` + ``labels.npy``) or ImageNet-C;
            required (the "" default only keeps `analyze`'s parser, which lists every analysis's
            options, from demanding it when no corruption analysis is asked for).
        corruptions: names (default: the 15 benchmark corruptions); severities: subset of 1..5.
        baseline: what mCE is relative to: "alexnet" (the authors' AlexNet errors of the data set:
            CIFAR-10-C / CIFAR-100-C for a 10- / 100-class model, ImageNet-C for 1000 classes; no mCE
            for other sets), "alexnet_cifar10" / "alexnet_cifar100" / "alexnet_imagenet", a baseline
            run's ``analysis/corruption/epoch=NNN.json``, or None (no mCE).
        baseline_clean_error: the baseline's clean error, for relative mCE (a run file brings its own;
            the authors publish none for their AlexNet tables: without it there is no relative mCE and
            a logged line says so; `baselines.PUBLISHED_CLEAN_ERROR` has ImageNet's published 0.435).
        max_images: evaluate only the first images of each severity (quick runs; None: all).
        mean, std: input normalisation (None: the datamodule's ``mean``/``std``).
        eval_batch_size, num_workers, image_size: loading of the corrupted images (the batch size
            matters: NLL is the mean of per-batch means, as the authors average it).
        data: the clean batches the clean accuracy is measured on.
        schedule, log_images, strict: see `AnalysisCallback`.
    """

    name = "corruption"

    def __init__(
        self,
        root: str = "",
        corruptions: list[str] | None = None,
        severities: tuple[Literal[1, 2, 3, 4, 5], ...] = (1, 2, 3, 4, 5),
        baseline: str | None = "alexnet",
        baseline_clean_error: float | None = None,
        max_images: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        image_size: int = 224,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not root:
            raise InputError(
                "corruption: give the corrupted data folder, e.g. --corruption.root data/CIFAR-100-C"
            )
        if baseline_clean_error is not None and not 0.0 <= baseline_clean_error < 1.0:
            raise InputError(f"corruption: baseline_clean_error={baseline_clean_error} must be in [0, 1)")
        self.root, self.corruptions, self.severities = Path(root), corruptions, tuple(severities)
        self.baseline, self.baseline_clean_error, self.max_images = baseline, baseline_clean_error, max_images
        self.mean, self.std = mean, std
        self.eval_batch_size, self.num_workers, self.image_size = eval_batch_size, num_workers, image_size

    def settings(self) -> dict[str, Any]:
        """Every option that changes the result (all but ``num_workers``)."""
        return {
            **super().settings(),
            "root": str(self.root),
            "corruptions": self.corruptions,
            "severities": list(self.severities),
            "baseline": self.baseline,
            "baseline_clean_error": self.baseline_clean_error,
            "max_images": self.max_images,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "eval_batch_size": self.eval_batch_size,
            "image_size": self.image_size,
        }

    def _baseline(self, layout: str, num_classes: int, evaluated: list[str]) -> tuple[str, dict, list, Any]:
        """(name, {corruption: errors}, the severities they are at, the clean error or None); name ""
        when there is no baseline."""
        if self.baseline is None:
            return "", {}, [], None
        severities = list(self.severities)
        if self.baseline == "alexnet" or self.baseline in ALEXNET:
            auto = self.baseline == "alexnet"
            table = alexnet_set_for(layout, num_classes) if auto else ALEXNET[self.baseline]
            errors = alexnet_errors(table, severities) if table else {}
            if auto and (not table or any(c not in errors for c in evaluated)):
                log.warning("corruption: no AlexNet table covers this set (%d classes); no mCE", num_classes)
                return "", {}, [], None
            return f"alexnet_{table}", errors, severities, self.baseline_clean_error
        if self.baseline.startswith("alexnet"):
            raise InputError(
                f"corruption: baseline {self.baseline!r} unknown; use alexnet, {', '.join(ALEXNET)} or a file"
            )
        errors = load_baseline_errors(self.baseline)
        clean = read_json(self.baseline).get("clean") or {}
        clean_error = self.baseline_clean_error
        if clean_error is None and "acc" in clean:
            clean_error = 1.0 - float(clean["acc"])
        return str(self.baseline), errors, load_baseline_severities(self.baseline), clean_error

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
        flat = evaluate_subsets(model, subsets, nll_average="per_batch")
        with eval_mode(model), torch.no_grad():
            clean = metrics_from_counts(classification_counts(model, batches), "per_batch")
            num_classes = int(model(batches[0][0][:1]).shape[-1])
        metrics: dict[str, dict[int, dict[str, float]]] = {}
        for (c, s), m in flat.items():
            metrics.setdefault(c, {})[s] = m
        errors = corruption_errors(metrics)
        name, base, base_severities, base_clean = self._baseline(
            detect_layout(self.root), num_classes, list(errors)
        )
        mce = ce = rmce = rce = None
        if name:
            mce, ce = relative_ce(errors, base, list(self.severities), base_severities)
            if base_clean is not None:
                rmce, rce = relative_mce(errors, 1.0 - clean["acc"], base, base_clean)
            else:
                log.warning(missing_clean_error(name))
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
            baseline=name or None,
            mce=mce,
            ce=ce,
            relative_mce=rmce,
            relative_ce=rce,
        )

    def plot(self, record: CorruptionRecord, context: AnalysisContext) -> dict[str, Any]:
        return {"": plots.plot_corruption(record.corruptions, record.severities, record.metrics, "acc")}
