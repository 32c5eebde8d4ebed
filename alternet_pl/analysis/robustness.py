"""Robustness: accuracy under frequency-band noise (paper Fig. 2b) and under common corruptions.

Frequency noise follows the official `FreqAttack`: eps * sign(N(0, 1)) noise of the input's shape,
band-limited: `freq.band_noise` (the one implementation) and added to the normalised input. One noise
draw per batch (seeded by ``seed`` and the batch index) is shared by all frequencies, so the curve
compares bands on the same noise (common random numbers) and is identical under DDP.

Corruptions: accuracy, NLL and ECE (10 equal-width confidence bins, as the authors' ops/tests.py; one
definition in `calibration`, shared with the module's val metrics) per corruption and severity;
the mean corruption error; mCE against a baseline (Hendrycks & Dietterich 2019):
CE_c = sum_s err(c, s) / sum_s err_base(c, s), mCE = mean_c CE_c (1.0 = as robust as the baseline).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.calibration import ECE_BINS, NLLAverage, calibration_counts, calibration_metrics
from alternet_pl.analysis.dist import all_gather_objects, rank_and_world
from alternet_pl.analysis.features import accuracies
from alternet_pl.analysis.files import read_json
from alternet_pl.analysis.freq import band_noise, check_freq
from alternet_pl.analysis.progress import progress
from alternet_pl.analysis.records import FreqNoiseRecord
from alternet_pl.analysis.state import eval_mode
from alternet_pl.errors import InputError

__all__ = [
    "FreqNoiseOptions",
    "classification_counts",
    "corruption_errors",
    "evaluate_subsets",
    "frequency_noise_accuracy",
    "frequency_noise_scan",
    "load_baseline_errors",
    "mean_corruption_error",
    "metrics_from_counts",
    "relative_ce",
    "run",
]


def _seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def frequency_noise_scan(
    model: nn.Module,
    batches: Iterable,
    freqs: Sequence[float],
    eps: float = 0.007,
    width: float = 0.2,
    seed: int = 0,
) -> dict[str, np.ndarray | float]:
    """Clean accuracy, accuracy with noise in each band, and their difference (eval mode, no grad).

    ``freqs`` are band centres in units of pi, each in (0, 1]; ``width`` is the half-width s in radians.
    """
    radians = [check_freq(f) for f in freqs]
    if eps < 0:
        raise InputError(f"eps must be >= 0, got {eps}")

    def logits(i: int, x: torch.Tensor) -> Iterator[torch.Tensor]:
        yield model(x)
        for f in radians:  # the same seed for every band: one noise draw, band-limited per band
            gen = torch.Generator().manual_seed(_seed(seed, i))
            yield model(x + band_noise(x.shape, f, width, eps, gen).to(device=x.device, dtype=x.dtype))

    acc = accuracies(model, batches, logits, desc="freq noise")
    delta = acc[1:] - acc[0]
    return {"freqs": np.asarray(freqs, float), "clean_acc": float(acc[0]), "acc": acc[1:], "delta": delta}


def frequency_noise_accuracy(
    model: nn.Module,
    batches: Iterable,
    freqs: Sequence[float],
    eps: float = 0.007,
    width: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """acc(noisy) - acc(clean) per band centre ``freqs`` (units of pi); see `frequency_noise_scan`."""
    return frequency_noise_scan(model, batches, freqs, eps, width, seed)["delta"]


@dataclass(frozen=True)
class FreqNoiseOptions:
    """Everything that changes the frequency-noise result.

    Args:
        freqs: band centres in units of pi, each in (0, 1].
        eps: noise amplitude in normalised-input units (official default 0.007).
        width: band half-width s in radians (official 0.2; it is added to f in radians).
        seed: seeds the noise draws (one per batch, shared by every band).
    """

    freqs: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    eps: float = 0.007
    width: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "freqs", tuple(float(f) for f in self.freqs))
        for f in self.freqs:
            check_freq(f)
        if self.eps < 0:
            raise InputError(f"FreqNoiseOptions: eps={self.eps}; use an amplitude >= 0")


def run(
    model: nn.Module, loss_fn: Callable | None, batches: Iterable, options: FreqNoiseOptions
) -> FreqNoiseRecord:
    """Accuracy under band-limited noise (`frequency_noise_scan`) as a `FreqNoiseRecord`; the loss is
    not used (accepted for the common signature)."""
    res = frequency_noise_scan(model, batches, options.freqs, options.eps, options.width, options.seed)
    return FreqNoiseRecord(
        freqs=[float(f) for f in res["freqs"]],
        eps=float(options.eps),
        width=float(options.width),
        clean_acc=float(res["clean_acc"]),
        acc=[float(a) for a in res["acc"]],
        delta=[float(d) for d in res["delta"]],
    )


# ---- calibration metrics -------------------------------------------------------------------------
def classification_counts(model: nn.Module, batches: Iterable, n_bins: int = ECE_BINS) -> dict:
    """Additive statistics for acc / NLL / ECE over ``batches`` (`calibration.calibration_counts`, summed,
    as floats and numpy arrays; the caller sets eval/no_grad)."""
    total: dict = {}
    for batch in batches:
        part = calibration_counts(model(batch[0]), batch[1], n_bins)
        for key, value in part.items():
            total[key] = total.get(key, 0) + value.detach().cpu().numpy()
    if not total:  # no batches: zero counts (metrics_from_counts then names the empty data)
        empty = calibration_counts(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long), n_bins)
        total = {k: v.numpy() for k, v in empty.items()}
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in total.items()}


def metrics_from_counts(c: Mapping, nll_average: NLLAverage = "per_sample") -> dict[str, float]:
    """acc, NLL and ECE = sum_b |correct_b - conf_b| / n from `classification_counts`
    (`calibration.calibration_metrics`, the definition ``val/ece`` and ``val/nll`` use too)."""
    return calibration_metrics(c, nll_average)


def evaluate_subsets(
    model: nn.Module,
    subsets: Mapping[str, Iterable],
    n_bins: int = ECE_BINS,
    nll_average: NLLAverage = "per_sample",
) -> dict[str, dict[str, float]]:
    """{key: metrics} for each named data subset; subsets are split over ranks, results gathered.
    ``nll_average="per_batch"``: NLL as the mean of per-batch means (the authors' corruption NLL)."""
    rank, world = rank_and_world()
    keys = list(subsets)
    mine = [k for i, k in enumerate(keys) if i % world == rank]
    local = {}
    with eval_mode(model), torch.no_grad():
        for key in progress(mine, desc="corruptions"):
            local[key] = metrics_from_counts(classification_counts(model, subsets[key], n_bins), nll_average)
    merged = {k: v for part in all_gather_objects(local) for k, v in part.items()}
    return {k: merged[k] for k in keys}


# ---- corruption errors ------------------------------------------------------------------------------
def corruption_errors(metrics: Mapping[str, Mapping[int, Mapping[str, float]]]) -> dict[str, list[float]]:
    """{corruption: [error at each severity, in severity order]} from {corruption: {severity: metrics}}."""
    return {c: [1.0 - m["acc"] for _, m in sorted(per.items())] for c, per in metrics.items()}


def mean_corruption_error(errors: Mapping[str, Sequence[float]]) -> float:
    """Unnormalised mean error over all corruptions and severities."""
    return float(np.mean([e for errs in errors.values() for e in errs]))


def relative_ce(
    errors: Mapping[str, Sequence[float]],
    baseline: Mapping[str, Sequence[float]],
    severities: Sequence[int] | None = None,
    baseline_severities: Sequence[int] | None = None,
) -> tuple[float, dict[str, float]]:
    """(mCE, {corruption: CE_c}) with CE_c = sum_s err / sum_s err_baseline (Hendrycks & Dietterich).

    Every corruption evaluated here must be in the baseline, at the same severities (checked when
    both runs recorded them); baseline corruptions not evaluated here are ignored.
    """
    missing = sorted(c for c in errors if c not in baseline)
    if missing:
        raise InputError(
            f"corruption(s) {missing} are not in the baseline (baseline has {sorted(baseline)}); "
            "evaluate both runs on the same corruptions"
        )
    recorded = severities is not None and baseline_severities is not None
    if recorded and sorted(severities) != sorted(baseline_severities):
        raise InputError(
            f"severities {sorted(severities)} here vs {sorted(baseline_severities)} in the baseline; "
            "evaluate both runs on the same severities"
        )
    ce = {}
    for c in errors:
        if len(errors[c]) != len(baseline[c]):
            raise InputError(
                f"corruption {c!r}: {len(errors[c])} severities here vs {len(baseline[c])} in the "
                "baseline; evaluate both on the same severities"
            )
        base = float(np.sum(baseline[c]))
        ce[c] = float(np.sum(errors[c])) / base if base > 0 else math.inf
    return float(np.mean(list(ce.values()))), ce


def load_baseline_severities(path: str | Path) -> list[int] | None:
    """The severities a baseline corruption result file was evaluated at (None if not recorded)."""
    severities = read_json(path).get("severities")
    return None if severities is None else [int(s) for s in severities]


def load_baseline_errors(path: str | Path) -> dict[str, list[float]]:
    """The per-corruption error lists of a baseline run's corruption result file (`epoch=NNN.json`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"baseline result file {path} not found; pass the baseline run's "
            "analysis/corruption/epoch=NNN.json"
        )
    data = read_json(path)
    if "errors" not in data:
        raise InputError(f"{path} has no 'errors' entry: is it a corruption analysis result file?")
    return {c: [float(e) for e in errs] for c, errs in data["errors"].items()}
