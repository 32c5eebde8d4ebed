"""Grouped options of the analysis callbacks: small frozen dataclasses that jsonargparse shows as nested
groups in `--help` and `--print_config` (e.g. `--analyses.data.num_batches`, `hessian.eigen.k`).

`AnalysisData` and `Schedule` are the callbacks' own (which batches, when); the analyses' groups
(`EigenOptions`, ..., `WeightDecayTerm`) live beside their analyses and are re-exported here.
Each validates itself on construction, so a wrong value fails with one line naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alternet_pl.analysis.hessian.options import DensityOptions, EigenOptions, SpectrumOptions, TraceOptions
from alternet_pl.analysis.options import WeightDecayTerm
from alternet_pl.errors import InputError, check_choice

__all__ = [
    "AnalysisData",
    "DensityOptions",
    "EigenOptions",
    "Schedule",
    "SpectrumOptions",
    "TraceOptions",
    "WeightDecayTerm",
    "check_choice",
]

Split = Literal["val", "train"]
When = Literal["fit_start", "warmup_end", "fit_end"]


@dataclass(frozen=True)
class AnalysisData:
    """The fixed batches an analysis runs on (the same ones every time it runs).

    Args:
        split: "val" (validation images) or "train" (training images).
        augment: use the training transform, and mixup / cutmix when the module has it (the paper's
            Hessian and landscape data); False: the evaluation transform.
        num_batches: how many batches.
        batch_size: analysis batch size (None: the datamodule's).
        seed: seeds the order of the batches and any randomness of the analysis itself.
    """

    split: Split = "val"
    augment: bool = False
    num_batches: int = 4
    batch_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("AnalysisData", "split", self.split, Split)
        if self.num_batches < 1:
            raise InputError(f"AnalysisData: num_batches={self.num_batches}; use at least 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"AnalysisData: batch_size={self.batch_size}; use at least 1 or None")


@dataclass(frozen=True)
class Schedule:
    """When an analysis runs during `fit`.

    Args:
        at: any of "fit_start", "warmup_end" (after the last warm-up epoch), "fit_end".
        every_n_epochs: also after every n-th training epoch (None: only at the `at` points).
    """

    at: tuple[When, ...] = ("fit_end",)
    every_n_epochs: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", tuple(self.at))
        for when in self.at:
            check_choice("Schedule", "at", when, When)
        if self.every_n_epochs is not None and self.every_n_epochs < 1:
            raise InputError(f"Schedule: every_n_epochs={self.every_n_epochs}; use >= 1 or None")
