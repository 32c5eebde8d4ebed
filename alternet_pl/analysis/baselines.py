"""Corruption baselines: the authors' AlexNet errors (the standard mCE normaliser) and relative mCE.

The AlexNet tables ship with the package (`alternet_pl/data/baselines/<dataset>_alexnet_corruption.csv`):
accuracy, NLL and ECE per corruption and severity for CIFAR-10-C, CIFAR-100-C and ImageNet-C, as the
authors published them (`resources/results/*_alexnet_dnn_corrupted.csv`). Their clean errors are not
published, so relative mCE against them needs ``baseline_clean_error`` (without it: no relative mCE
and one logged line, `missing_clean_error`; `PUBLISHED_CLEAN_ERROR` holds the one published figure).

Hendrycks & Dietterich (2019): CE_c = sum_s E(c, s) / sum_s E_base(c, s), mCE = mean_c CE_c; relative
CE_c = sum_s (E(c, s) - E_clean) / sum_s (E_base(c, s) - E_base_clean), relative mCE = mean_c of it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Literal, get_args

import numpy as np

from alternet_pl.errors import InputError

__all__ = [
    "ALEXNET",
    "PUBLISHED_CLEAN_ERROR",
    "AlexNetSet",
    "alexnet_errors",
    "alexnet_set_for",
    "alexnet_table",
    "missing_clean_error",
    "relative_mce",
]

AlexNetSet = Literal["cifar10", "cifar100", "imagenet"]

#: baseline names -> the AlexNet table they read
ALEXNET = {f"alexnet_{d}": d for d in get_args(AlexNetSet)}

#: AlexNet's clean error where a paper publishes one (a fraction), for relative mCE. ImageNet: 43.5%,
#: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
#: Perturbations", ICLR 2019 (arXiv:1903.12261), the clean error of their ImageNet-C results table
#: (torchvision's AlexNet, whose model card gives 56.522% top-1, i.e. 43.478% error).
#: Not a default: the authors' ImageNet-C table is their own evaluation of AlexNet, 0.1 to 4.4 points
#: of error above Hendrycks & Dietterich's per corruption (the `ALEXNET_ERR` list of their code), so
#: the pair would mix two evaluations. CIFAR-10 / CIFAR-100: no clean error of the authors' AlexNet is
#: published (their `resources/results` hold the corrupted sets only).
PUBLISHED_CLEAN_ERROR: dict[str, float] = {"alexnet_imagenet": 0.435}


def alexnet_table(dataset: AlexNetSet) -> dict[str, dict[int, dict[str, float]]]:
    """{corruption: {severity: {"acc", "nll", "ece"}}} of the authors' AlexNet on ``dataset``."""
    if dataset not in get_args(AlexNetSet):
        raise InputError(f"no AlexNet corruption table for {dataset!r}; choose one of {get_args(AlexNetSet)}")
    path = resources.files("alternet_pl").joinpath(f"data/baselines/{dataset}_alexnet_corruption.csv")
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    rows = csv.DictReader(io.StringIO("\n".join(lines)))
    table: dict[str, dict[int, dict[str, float]]] = {}
    for row in rows:
        metrics = {k: float(row[k]) for k in ("acc", "nll", "ece")}
        table.setdefault(row["corruption"], {})[int(row["severity"])] = metrics
    return table


def alexnet_errors(
    dataset: AlexNetSet, severities: Sequence[int] = (1, 2, 3, 4, 5)
) -> dict[str, list[float]]:
    """{corruption: [AlexNet's error at each of ``severities``]} on ``dataset`` (error = 1 - accuracy)."""
    table = alexnet_table(dataset)
    return {c: [1.0 - per[int(s)]["acc"] for s in severities] for c, per in table.items()}


def alexnet_set_for(layout: str, num_classes: int) -> AlexNetSet | None:
    """The AlexNet table of a corrupted set: CIFAR-10-C / -100-C (the ``.npy`` layout with a 10- or
    100-class model), ImageNet-C (the folder layout with a 1000-class model); None for anything else."""
    if layout == "npy" and num_classes in (10, 100):
        return "cifar10" if num_classes == 10 else "cifar100"
    return "imagenet" if layout == "folder" and num_classes == 1000 else None


def missing_clean_error(baseline: str) -> str:
    """The one line said when relative mCE is not computed because ``baseline``'s clean error is
    unknown: it names the option and any published figure (`PUBLISHED_CLEAN_ERROR`)."""
    line = (
        f"corruption: no relative mCE against {baseline}: its clean error is unknown; "
        "pass --corruption.baseline_clean_error"
    )
    if baseline in PUBLISHED_CLEAN_ERROR:
        return (
            f"{line} (published for AlexNet on ImageNet: {PUBLISHED_CLEAN_ERROR[baseline]}, Hendrycks & "
            "Dietterich 2019, an evaluation apart from the authors' table)"
        )
    return f"{line} (none is published for the authors' AlexNet here)" if baseline in ALEXNET else line


def relative_mce(
    errors: Mapping[str, Sequence[float]],
    clean_error: float,
    baseline: Mapping[str, Sequence[float]],
    baseline_clean_error: float,
) -> tuple[float, dict[str, float]]:
    """(relative mCE, {corruption: relative CE_c}); every corruption here must be in the baseline
    with as many severities (`robustness.relative_ce` checks the same for mCE)."""
    ce = {}
    for c, errs in errors.items():
        if c not in baseline or len(baseline[c]) != len(errs):
            raise InputError(f"corruption {c!r} is not in the baseline at the same severities")
        base = float(np.sum(np.asarray(baseline[c]) - baseline_clean_error))
        ce[c] = float(np.sum(np.asarray(errs) - clean_error)) / base if base > 0 else math.inf
    return float(np.mean(list(ce.values()))), ce
