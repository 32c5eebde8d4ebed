"""The analysis registry: every analysis by name, as plain data (importable without torch).

One entry per analysis: its `name` (the folder under `analysis/`, the `--analysis` name, the prefix
of its logged scalars), the import paths of its callback, record, options and report figure. `fit`
reads class paths from it, `analyze` selects analyses by name with it, the report and W&B name the
analyses of a run's `config.yaml` with it; nothing here imports torch or Lightning.

An analysis of one's own is added with `register(AnalysisEntry(...))` before `analyze` parses.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANALYSES",
    "ANALYSIS_NAMES",
    "AnalysisEntry",
    "closest",
    "entry_for_class_path",
    "import_object",
    "name_of_class_path",
    "register",
]


@dataclass(frozen=True)
class AnalysisEntry:
    """One analysis: where its pieces live (dotted import paths; `options` / `figure` None if none).

    Args:
        name: the analysis's name (`analysis/<name>/`, `--analysis <name>`, `<name>/<scalar>`).
        callback: its `AnalysisCallback` subclass (what `analyses:` entries name as class_path).
        record: its result record (`alternet_pl.analysis.records`).
        options: its frozen options dataclass (all that changes the result), beside its `run`.
        figure: the report's comparison figure drawing it (`alternet_pl.plots...`).
    """

    name: str
    callback: str
    record: str
    options: str | None = None
    figure: str | None = None

    @property
    def class_name(self) -> str:
        """The callback's class name (what a short `class_path` gives)."""
        return self.callback.rpartition(".")[2]


_CB = "alternet_pl.callbacks"
_REC = "alternet_pl.analysis.records"
_FIG = "alternet_pl.plots"

#: name -> entry, in the order the report lists the analyses
ANALYSES: dict[str, AnalysisEntry] = {
    e.name: e
    for e in (
        AnalysisEntry(
            "hessian",
            f"{_CB}.hessian.HessianCallback",
            f"{_REC}.HessianRecord",
            "alternet_pl.analysis.hessian.run.HessianOptions",
            f"{_FIG}.compare.curvature.hessian_spectrum_figure",
        ),
        AnalysisEntry(
            "landscape",
            f"{_CB}.landscape.LandscapeCallback",
            f"{_REC}.LandscapeRecord",
            "alternet_pl.analysis.landscape.run.LandscapeOptions",
            f"{_FIG}.compare.curvature.landscape_figure",
        ),
        AnalysisEntry(
            "trajectory",
            f"{_CB}.landscape.TrajectoryCallback",
            f"{_REC}.TrajectoryRecord",
            "alternet_pl.analysis.trajectory.TrajectoryOptions",
            f"{_FIG}.compare.curvature.trajectory_figure",
        ),
        AnalysisEntry(
            "fourier",
            f"{_CB}.fourier.FourierCallback",
            f"{_REC}.FourierRecord",
            "alternet_pl.analysis.fourier.FourierOptions",
            f"{_FIG}.compare.features.fourier_figure",
        ),
        AnalysisEntry(
            "variance",
            f"{_CB}.variance.VarianceCallback",
            f"{_REC}.VarianceRecord",
            "alternet_pl.analysis.variance.VarianceOptions",
            f"{_FIG}.compare.features.variance_figure",
        ),
        AnalysisEntry(
            "freq_noise",
            f"{_CB}.robustness.FreqNoiseCallback",
            f"{_REC}.FreqNoiseRecord",
            "alternet_pl.analysis.robustness.FreqNoiseOptions",
            f"{_FIG}.compare.robustness.freq_noise_figure",
        ),
        AnalysisEntry(
            "corruption",
            f"{_CB}.robustness.CorruptionCallback",
            f"{_REC}.CorruptionRecord",
            None,
            f"{_FIG}.compare.robustness.corruption_figure",
        ),
        AnalysisEntry(
            "lesion",
            f"{_CB}.lesion.LesionCallback",
            f"{_REC}.LesionRecord",
            "alternet_pl.analysis.lesion.LesionOptions",
            f"{_FIG}.compare.features.lesion_figure",
        ),
    )
}

#: the built-in analyses' names, in the report's order
ANALYSIS_NAMES: tuple[str, ...] = tuple(ANALYSES)


def register(entry: AnalysisEntry) -> None:
    """Add (or replace) an analysis, e.g. one of a user's own, so `analyze --analysis NAME` finds it."""
    ANALYSES[entry.name] = entry


def entry_for_class_path(class_path: str) -> AnalysisEntry | None:
    """The entry whose callback `class_path` names: the full import path, any path ending in the
    class name (`alternet_pl.callbacks.HessianCallback`), or the bare class name; None if none."""
    cls = class_path.rpartition(".")[2]
    for entry in ANALYSES.values():
        if class_path == entry.callback or cls == entry.class_name:
            return entry
    return None


def name_of_class_path(class_path: str) -> str | None:
    """The analysis name of a callback class path (`entry_for_class_path`), None if unregistered."""
    entry = entry_for_class_path(class_path)
    return entry.name if entry is not None else None


def closest(word: str, choices: list[str] | tuple[str, ...] | None = None) -> str | None:
    """The registered name (or one of `choices`) closest to a mistyped `word`, None if none is close:
    the "did you mean" of an error line."""
    pool = list(ANALYSES) if choices is None else list(choices)
    found = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    return found[0] if found else None


def import_object(path: str) -> Any:
    """The object a dotted import path names (`package.module.Name`); imports its module."""
    module, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module), attr)
