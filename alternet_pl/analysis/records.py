"""Typed result records: one frozen dataclass per analysis result, shared by the writer and the report.

A record is written as `<stem>.json` (every field that is not an array, plus its `scalars()` for
people and loggers) and `<stem>.npz` (its `np.ndarray` fields). `from_files` reads it back and
raises `RecordError` naming the file and the field when one is missing, so a renamed field fails
loudly instead of silently dropping a figure.
"""

from __future__ import annotations

import math
import os
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from alternet_pl.analysis.files import read_json, write_json, write_npz

__all__ = [
    "RECORDS",
    "AnalysisRecord",
    "CorruptionRecord",
    "FourierRecord",
    "FreqNoiseRecord",
    "HessianRecord",
    "LandscapeRecord",
    "LesionRecord",
    "RecordError",
    "ScalarRecord",
    "TrajectoryRecord",
    "VarianceRecord",
    "load_record",
]

#: record class name -> class; filled by `AnalysisRecord.__init_subclass__`
RECORDS: dict[str, type[AnalysisRecord]] = {}

R = TypeVar("R", bound="AnalysisRecord")


class RecordError(ValueError):
    """A result file that does not hold the record it should (missing field, wrong kind)."""


@dataclass(frozen=True, kw_only=True, eq=False)
class AnalysisRecord:
    """Fields every result has. `epoch`, `seconds`, `world_size` and `settings` (the options that
    produced it) are filled in by the callback that runs the analysis."""

    epoch: int = 0
    seconds: float = 0.0
    world_size: int = 1
    settings: dict[str, Any] = field(default_factory=dict)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        RECORDS[cls.__name__] = cls

    def scalars(self) -> dict[str, float]:
        """The headline numbers, logged as `<analysis>/<key>`."""
        return {}

    def replace(self: R, **changes: Any) -> R:
        """A copy with some fields changed (the record itself is frozen)."""
        return replace(self, **changes)

    # ---- files ----------------------------------------------------------------------------------
    @classmethod
    def _hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def array_fields(cls) -> list[str]:
        """Names of the fields stored in the npz file (those typed `np.ndarray`)."""
        hints = cls._hints()
        return [f.name for f in fields(cls) if _is_array(hints[f.name])]

    def to_files(self, directory: str | os.PathLike, stem: str) -> dict[str, Path]:
        """Write `<directory>/<stem>.json` (+ `.npz` when it has arrays) atomically; return the paths."""
        directory = Path(directory)
        arrays = set(self.array_fields())
        doc: dict[str, Any] = {"record": type(self).__name__, "scalars": self.scalars()}
        npz: dict[str, np.ndarray] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in arrays and value is not None:
                npz[f.name] = np.asarray(value)
            else:
                doc[f.name] = value
        written: dict[str, Path] = {}
        if npz:
            written["npz"] = write_npz(directory / f"{stem}.npz", npz)
        written["json"] = write_json(directory / f"{stem}.json", doc)
        return written

    @classmethod
    def from_files(cls: type[R], path: str | os.PathLike) -> R:
        """Read a record from `<stem>.json` (and `<stem>.npz`); `path` may name either file or the stem.

        Raises:
            RecordError: the file holds another record kind, or a field is missing.
            FileNotFoundError: no such json file.
        """
        base = Path(path)
        if base.suffix in (".json", ".npz"):
            base = base.with_suffix("")
        json_path, npz_path = base.with_suffix(".json"), base.with_suffix(".npz")
        if not json_path.is_file():
            raise FileNotFoundError(f"result file {json_path} not found")
        doc = read_json(json_path)
        kind = doc.get("record")
        target: type[AnalysisRecord] = cls
        if cls is AnalysisRecord:
            if kind not in RECORDS:
                raise RecordError(f"{json_path}: record kind {kind!r} unknown; known: {sorted(RECORDS)}")
            target = RECORDS[kind]
        elif kind != cls.__name__:
            raise RecordError(f"{json_path}: holds a {kind!r}, not a {cls.__name__}")
        arrays: dict[str, np.ndarray] = {}
        if npz_path.is_file():
            with np.load(npz_path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        hints = target._hints()
        values: dict[str, Any] = {}
        for f in fields(target):
            if f.name in arrays:
                values[f.name] = arrays[f.name]
            elif f.name in doc:
                values[f.name] = _restore(doc[f.name], hints[f.name])
            elif f.metadata.get("added_later"):
                continue  # older files without it stay readable; the field's default applies
            else:
                where = npz_path if _is_array(hints[f.name]) else json_path
                raise RecordError(
                    f"{where}: field {f.name!r} of {target.__name__} is missing (written by another "
                    "version of alternet_pl?); re-run the analysis to rewrite the file"
                )
        return typing.cast(R, target(**values))


def load_record(path: str | os.PathLike) -> AnalysisRecord:
    """Read any record; its kind comes from the file's `record` entry."""
    return AnalysisRecord.from_files(path)


def _is_array(hint: Any) -> bool:
    return hint is np.ndarray or np.ndarray in typing.get_args(hint)


def _restore(value: Any, hint: Any) -> Any:
    """Undo what JSON did to a value of type `hint` (NaN/inf written as null/"inf", tuples as lists)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is float:
        if value is None:
            return math.nan
        return float(value)
    if hint is int and value is not None:
        return int(value)
    if origin is list and value is not None:
        return [_restore(v, args[0]) for v in value]
    if origin is dict and value is not None:
        return {k: _restore(v, args[1]) for k, v in value.items()}
    return value


def _kind_scalars(by_kind: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in by_kind.items()}


# ---- one record per analysis ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, eq=False)
class ScalarRecord(AnalysisRecord):
    """Named numbers only: for analyses that have nothing else to keep."""

    values: dict[str, float]

    def scalars(self) -> dict[str, float]:
        return dict(self.values)


@dataclass(frozen=True, kw_only=True, eq=False)
class HessianRecord(AnalysisRecord):
    """Extreme eigenvalues, trace, SLQ density, per-batch spectrum and block-wise eigenvalues.

    `eigenvalues`: the top-k, ascending; `residuals`: their (and the bottom one's) residual norms.
    Optional parts are None when not asked for.
    """

    eigenvalues: np.ndarray
    residuals: np.ndarray
    top_eig: float
    min_eig: float  # nan when the bottom eigenvalue was not asked for
    converged: bool
    num_params: int
    num_samples: int
    num_hvps: int
    trace: float | None = None
    trace_stderr: float | None = None
    density_nodes: np.ndarray | None = None
    density_weights: np.ndarray | None = None
    spectrum: np.ndarray | None = None  # (num_batches, k)
    spectrum_residuals: np.ndarray | None = None
    spectrum_which: str | None = None
    spectrum_unconverged_batches: list[int] = field(default_factory=list)
    block_names: list[str] = field(default_factory=list)
    block_kinds: list[str] = field(default_factory=list)
    block_top_eig: np.ndarray | None = None
    block_min_eig: np.ndarray | None = None

    def scalars(self) -> dict[str, float]:
        out = {"top_eig": self.top_eig, "min_eig": self.min_eig, "num_hvps": float(self.num_hvps)}
        if self.trace is not None:
            out.update(trace=self.trace, trace_stderr=float(self.trace_stderr or 0.0))
        return out


@dataclass(frozen=True, kw_only=True, eq=False)
class LandscapeRecord(AnalysisRecord):
    """Loss / accuracy on a grid: `loss` has one axis per direction, each of `coords`' length.

    `nll` is the data term of `loss`; `l2` the weight-decay term when one was added (else None);
    `loss_stderr` the standard error of each cell's loss over its samples (None if not recorded).
    Sharpness: `edge_increase` (mean of loss - centre over the grid's boundary), `max_increase`.
    """

    coords: np.ndarray
    loss: np.ndarray
    nll: np.ndarray
    acc: np.ndarray
    l2: np.ndarray | None = None
    loss_stderr: np.ndarray | None = None
    center_loss: float
    center_acc: float
    edge_increase: float
    max_increase: float
    num_samples: int
    nonfinite_cells: list[list[float]] = field(default_factory=list)  # grid coordinates
    notes: list[str] = field(default_factory=list)

    @property
    def dims(self) -> int:
        return int(np.asarray(self.loss).ndim)

    def scalars(self) -> dict[str, float]:
        return {
            "center_loss": self.center_loss,
            "center_acc": self.center_acc,
            "edge_increase": self.edge_increase,
            "max_increase": self.max_increase,
            "nonfinite_cells": float(len(self.nonfinite_cells)),
        }


@dataclass(frozen=True, kw_only=True, eq=False)
class TrajectoryRecord(AnalysisRecord):
    """The weights' path on its top-2 PCA plane (`path`, one row per snapshot of `epochs`), the loss
    grid over that plane (`x`, `y`, `loss`, `acc`) and the polar view (`angle`, `radius`)."""

    x: np.ndarray
    y: np.ndarray
    loss: np.ndarray
    acc: np.ndarray
    path: np.ndarray
    epochs: np.ndarray
    explained: np.ndarray
    angle: np.ndarray
    radius: np.ndarray
    path_length: float
    nonfinite_cells: list[list[float]] = field(default_factory=list)  # grid coordinates
    notes: list[str] = field(default_factory=list)

    def scalars(self) -> dict[str, float]:
        return {
            "explained_1": float(self.explained[0]),
            "explained_2": float(self.explained[1]),
            "path_length": self.path_length,
        }


@dataclass(frozen=True, kw_only=True, eq=False)
class _LayerRecord(AnalysisRecord):
    """One value per tapped layer: `layers`, their `kinds` and normalised `depth`; `by_kind` holds
    the per-kind means that are logged (e.g. `hf_msa`, `hf_change_conv`)."""

    layers: list[str]
    kinds: list[str]
    depth: list[float]
    by_kind: dict[str, float] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        return _kind_scalars(self.by_kind)


@dataclass(frozen=True, kw_only=True, eq=False)
class FourierRecord(_LayerRecord):
    """Delta log amplitude: `curves[i]` of layer i (from 0 to pi), `hf[i]` its last (highest) value."""

    hf: list[float]
    curves: list[list[float]]


@dataclass(frozen=True, kw_only=True, eq=False)
class VarianceRecord(_LayerRecord):
    """Feature-map variance of each layer."""

    variance: list[float]


@dataclass(frozen=True, kw_only=True, eq=False)
class LesionRecord(_LayerRecord):
    """Accuracy with each residual branch removed (`acc`) and its drop from `clean_acc` (`drop`);
    `skipped`: "<block>: <why>" for each block that could not be lesioned."""

    clean_acc: float
    acc: list[float]
    drop: list[float]
    skipped: list[str] = field(default_factory=list, metadata={"added_later": True})

    def scalars(self) -> dict[str, float]:
        return {"clean_acc": self.clean_acc, **_kind_scalars(self.by_kind)}


@dataclass(frozen=True, kw_only=True, eq=False)
class FreqNoiseRecord(AnalysisRecord):
    """Accuracy under band-limited noise at `freqs` (units of pi) and its change from `clean_acc`."""

    freqs: list[float]
    eps: float
    width: float
    clean_acc: float
    acc: list[float]
    delta: list[float]

    def scalars(self) -> dict[str, float]:
        out = {"clean_acc": self.clean_acc}
        out.update({f"delta_{f:g}pi": float(d) for f, d in zip(self.freqs, self.delta)})
        return out


@dataclass(frozen=True, kw_only=True, eq=False)
class CorruptionRecord(AnalysisRecord):
    """Accuracy / NLL / ECE per corruption and severity: `metrics[corruption][str(severity)][metric]`;
    `errors[corruption]` the error per severity (what a baseline's mCE reads); `acc` as a
    (corruption, severity) array. `mce` and `ce` against a `baseline` (the authors' AlexNet errors or
    a run's result file), `relative_mce` and `relative_ce` when the baseline's clean error is known."""

    root: str
    corruptions: list[str]
    severities: list[int]
    max_images: int | None = None
    clean: dict[str, float]
    metrics: dict[str, dict[str, dict[str, float]]]
    errors: dict[str, list[float]]
    acc: np.ndarray
    mean_corruption_error: float
    mean_acc: float
    mean_nll: float
    mean_ece: float
    baseline: str | None = None
    mce: float | None = None
    ce: dict[str, float] | None = None
    relative_mce: float | None = field(default=None, metadata={"added_later": True})
    relative_ce: dict[str, float] | None = field(default=None, metadata={"added_later": True})

    def scalars(self) -> dict[str, float]:
        out = {
            "mean_corruption_error": self.mean_corruption_error,
            "clean_acc": float(self.clean["acc"]),
            "mean_acc": self.mean_acc,
            "mean_nll": self.mean_nll,
            "mean_ece": self.mean_ece,
        }
        if self.mce is not None:
            out["mce"] = self.mce
        if self.relative_mce is not None:
            out["relative_mce"] = self.relative_mce
        return out
