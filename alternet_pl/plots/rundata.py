"""Everything the report reads from a run directory, in one place.

A run is `runs/<experiment>/<version>/` with `config.yaml`, `metrics.csv` and
`analysis/<name>/<stem>.json|.npz` (a typed record of `alternet_pl.analysis.records`, one stem per
time an analysis ran, e.g. `epoch=003`), plus an error record `analysis/<name>/<stem>.error.json`
where an analysis failed; `alternet_pl.runs` names these files and reads the config and the error
records. The figures and the report read runs only through `Run`.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from alternet_pl import registry
from alternet_pl.analysis.records import RecordError, load_record
from alternet_pl.errors import InputError
from alternet_pl.old_runs import upgrade_run_config
from alternet_pl.plots import model_color, model_family, model_label
from alternet_pl.runs import (
    ANALYSIS_DIR,
    METRICS_FILE,
    ErrorRecord,
    read_config,
    read_error_records,
    record_path,
    result_stems,
)

__all__ = [
    "ANALYSIS_NAMES",
    "Run",
    "load_run",
]

#: every analysis the report knows, in the order the report lists them (`alternet_pl.registry`)
ANALYSIS_NAMES = registry.ANALYSIS_NAMES


def _analysis_name(class_path: str) -> str | None:
    """The `name` of an analysis callback given by its import path: a registered one by the registry,
    a class of an already imported module by its `name` attribute, else its snake-cased class name."""
    if (name := registry.name_of_class_path(class_path)) is not None:
        return name
    module, _, cls = class_path.rpartition(".")
    name = getattr(getattr(sys.modules.get(module), cls, None), "name", None)
    if isinstance(name, str) and name:
        return name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.removesuffix("Callback")).lower() or None


@dataclass(frozen=True)
class Run:
    """One run directory, read lazily: its config, metrics and latest result of each analysis."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    #: analysis -> why its latest result file could not be read
    unreadable: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    _records: dict[tuple[str, str], Any] = field(default_factory=dict, compare=False, repr=False)

    # ---- identity ---------------------------------------------------------------------------------
    @property
    def experiment(self) -> str:
        return str(self.config.get("experiment") or self.path.parent.name)

    @property
    def label(self) -> str:
        """ "<experiment>/<version>", how every figure names the run."""
        return f"{self.path.parent.name}/{self.path.name}"

    def _network(self) -> dict:
        """config.yaml's `model.network` ({name, kwargs}; an older run's flat keys grouped on reading)."""
        model = self.config.get("model") or {}
        network = model.get("network") if isinstance(model, dict) else None
        return network if isinstance(network, dict) else {}

    @property
    def model(self) -> str:
        """The model's registered name from config.yaml (the experiment name if unknown)."""
        return str(self._network().get("name") or self.experiment)

    @property
    def family(self) -> str:
        return model_family(self.model) or model_family(self.experiment)

    @property
    def color(self) -> str:
        return model_color(self.model if model_family(self.model) else self.experiment)

    @property
    def model_label(self) -> str:
        return model_label(self.model if model_family(self.model) else self.experiment)

    @property
    def num_msas(self) -> int | None:
        """MSA blocks in the model as configured (`msa_per_stage` or a 'C'/'M' `layout`); None if the
        config does not say (the build-up curve needs it)."""
        kwargs = self._network().get("kwargs") or {}
        if kwargs.get("msa_per_stage") is not None:
            return int(sum(kwargs["msa_per_stage"]))
        if kwargs.get("layout") is not None:
            return int(sum(str(s).upper().count("M") for s in kwargs["layout"]))
        return None

    @property
    def configured_analyses(self) -> tuple[str, ...]:
        """The analyses config.yaml attached to the run, by name."""
        names = []
        for entry in self.config.get("analyses") or []:
            class_path = entry.get("class_path") if isinstance(entry, dict) else None
            if class_path and (name := _analysis_name(class_path)):
                names.append(name)
        return tuple(dict.fromkeys(names))

    # ---- metrics ----------------------------------------------------------------------------------
    @cached_property
    def metric_rows(self) -> list[dict[str, float]]:
        """metrics.csv as rows of floats (empty cells left out)."""
        path = self.path / METRICS_FILE
        if not path.is_file():
            return []
        rows = []
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                parsed = {}
                for key, value in row.items():
                    if key and value not in ("", None):
                        try:
                            parsed[key] = float(value)
                        except ValueError:
                            continue
                rows.append(parsed)
        return rows

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of one metrics.csv column, one point per logged row that has it; epochs
        are 1-based (the value at the end of epoch n is at n)."""
        pts = [(r.get("epoch", math.nan) + 1, r[key]) for r in self.metric_rows if key in r]
        if not pts:
            return np.zeros(0), np.zeros(0)
        x, y = np.array(pts, dtype=float).T
        return x, y

    def final_metric(self, key: str) -> float | None:
        _, y = self.curve(key)
        return float(y[-1]) if y.size else None

    def best_metric(self, key: str, mode: str = "max") -> float | None:
        _, y = self.curve(key)
        if not y.size:
            return None
        return float(np.nanmax(y) if mode == "max" else np.nanmin(y))

    # ---- analysis results ------------------------------------------------------------------------
    def result_stems(self, analysis: str) -> list[str]:
        """The stems an analysis wrote a result for, oldest first."""
        return result_stems(self.path, analysis)

    def has(self, analysis: str) -> bool:
        return self.record(analysis) is not None

    def record(self, analysis: str, stem: str | None = None) -> Any:
        """The typed record (`alternet_pl.analysis.records`) of an analysis, its latest stem unless
        given; None if it never ran or its file cannot be read (then `unreadable[analysis]` says why).

        Raises:
            RecordError: the file lacks a field of its record (written by another version).
        """
        stems = self.result_stems(analysis)
        stem = stem or (stems[-1] if stems else None)
        if stem is None:
            return None
        key = (analysis, stem)
        if key not in self._records:
            path = record_path(self.path, analysis, stem)
            try:
                self._records[key] = load_record(path)
            except RecordError:
                raise  # written by another version: a loud error, never a silently missing figure
            except (OSError, json.JSONDecodeError) as err:  # a truncated or unreadable file
                self._records[key] = None
                self.unreadable[analysis] = f"{path.name} unreadable: {err}"
        return self._records[key]

    def scalar(self, analysis: str, key: str) -> float | None:
        """One headline scalar (`record.scalars()[key]`) of an analysis's latest result; None if absent
        or not finite."""
        record = self.record(analysis)
        value = record.scalars().get(key) if record is not None else None
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        return None

    @cached_property
    def errors(self) -> list[ErrorRecord]:
        return read_error_records(self.path)


def load_run(path: str | Path) -> Run:
    """A `Run` for a run directory. Raises ValueError if it holds neither metrics.csv nor analysis/."""
    path = Path(path)
    if not (path / METRICS_FILE).is_file() and not (path / ANALYSIS_DIR).is_dir():
        raise InputError(
            f"{path} is not a run directory (no metrics.csv or analysis/ inside): pass "
            "runs/<experiment>/<version>"
        )
    return Run(path=path, config=upgrade_run_config(read_config(path)))
