"""`analyze_model`: the analyses on any `nn.Module`, from Python or a notebook, without Lightning.

    from alternet_pl import analyze_model, plot_record
    records = analyze_model(model, loader, analyses=["fourier", "variance", "hessian"], num_batches=2)
    figures = plot_record(records["fourier"])          # {"": matplotlib Figure, ...}

Each analysis runs as its callback does during training (same options, same record, model state
restored bit for bit afterwards), on the batches given here instead of a data module's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alternet_pl.analysis.dist import rank_and_world
from alternet_pl.analysis.files import write_figure
from alternet_pl.analysis.loss import cross_entropy_loss
from alternet_pl.analysis.records import AnalysisRecord
from alternet_pl.analysis.state import restore_state, to_device
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext
from alternet_pl.errors import InputError
from alternet_pl.registry import ANALYSES, closest, import_object
from alternet_pl.runs import analysis_dir, figure_name, result_stem

__all__ = ["analyze_model", "make_analysis", "plot_record"]

#: analyses that need more than a model and batches (saved checkpoints)
_NOT_HERE = {"trajectory": "it needs the checkpoints of a training run; use `python -m alternet_pl.analyze`"}

AnalysisSpec = str | tuple[str, Mapping[str, Any]] | AnalysisCallback


def make_analysis(spec: AnalysisSpec) -> AnalysisCallback:
    """An analysis from a name ("fourier"), a (name, {option: value}) pair or a callback instance.

    Raises `InputError` for an unknown name, bad options or an analysis that needs a training run."""
    if isinstance(spec, AnalysisCallback):
        return spec
    name, options = (spec, {}) if isinstance(spec, str) else spec
    if name in _NOT_HERE:
        raise InputError(f"analysis {name!r} cannot run on a bare model: {_NOT_HERE[name]}")
    if name not in ANALYSES:
        near = closest(name)
        hint = f"did you mean {near!r}? " if near else ""
        raise InputError(
            f"analysis {name!r} unknown; {hint}choose from {sorted(set(ANALYSES) - set(_NOT_HERE))}"
        )
    cls = import_object(ANALYSES[name].callback)
    try:
        return cls(**_nested_options(cls, options))
    except TypeError as err:
        raise InputError(f"analysis {name!r}: {err}") from None


def _nested_options(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` with each mapping given for a dataclass-typed argument (``eigen={"k": 5}``) turned
    into that dataclass, as a YAML config is; a wrong field name raises `TypeError`."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass):
            with contextlib.suppress(Exception):  # unresolvable hints: leave those options as given
                hints.update(typing.get_type_hints(klass.__init__))
    return {
        key: hints[key](**value)
        if isinstance(value, Mapping) and dataclasses.is_dataclass(hints.get(key))
        else value
        for key, value in options.items()
    }


def _batches(data: Iterable, num_batches: int | None, device: torch.device) -> list:
    if isinstance(data, torch.Tensor):
        raise InputError("data: give a DataLoader or a list of (images, labels) batches, not one tensor")
    batches = list(islice(data, num_batches) if num_batches else data)
    if not batches:
        raise InputError("data holds no batches; give a DataLoader or a non-empty list of (images, labels)")
    return [to_device(b, device) for b in batches]


def analyze_model(
    model: nn.Module,
    data: Iterable,
    analyses: Sequence[AnalysisSpec] = ("fourier", "variance"),
    loss_fn: Callable | None = None,
    num_batches: int | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, AnalysisRecord]:
    """Run each analysis on ``model`` over ``data``; return {analysis name: record}.

    Args:
        model: any `nn.Module` (this project's, timm's, torchvision's, your own); left as it was.
        data: a DataLoader or a list of batches ``(images, labels)`` (images alone do for Fourier
            and variance).
        analyses: names ("fourier", "variance", "lesion", "hessian", "landscape", "freq_noise",
            "corruption"), (name, {option: value}) pairs, or callback instances.
        loss_fn: ``loss_fn(model, batch) -> (loss_mean, n, ...)``; default cross-entropy.
        num_batches: use only the first batches of ``data``.
        out_dir: also write each record and its figures as a run would (``<out_dir>/analysis/<name>``).

    Raises `InputError` (one line) for a bad analysis, option or model before any analysis runs.
    """
    callbacks = [make_analysis(spec) for spec in analyses]
    device = next(model.parameters()).device
    batches = _batches(data, num_batches, device)
    loss_fn = loss_fn or cross_entropy_loss
    rank, world = rank_and_world()
    records: dict[str, AnalysisRecord] = {}
    for cb in callbacks:
        context = AnalysisContext(epoch=0, out_dir=Path(out_dir or "."), rank=rank, world_size=world)
        start = time.perf_counter()
        with restore_state(model), torch.autocast(device_type=device.type, enabled=False):
            record = cb.compute(model, loss_fn, batches, context)
        record = record.replace(
            epoch=0, seconds=round(time.perf_counter() - start, 3), world_size=world, settings=cb.settings()
        )
        records[cb.name] = record
        if out_dir is not None and rank == 0:
            folder, stem = analysis_dir(out_dir, cb.name), result_stem(0)
            record.to_files(folder, stem)
            for key, fig in plot_record(record).items():
                write_figure(folder / figure_name(stem, key), fig)
    return records


def plot_record(record: AnalysisRecord) -> dict[str, Any]:
    """The figures of a record as its analysis draws them: {key: matplotlib Figure}, "" the main one."""
    kind = type(record).__name__
    entry = next((e for e in ANALYSES.values() if e.record.rpartition(".")[2] == kind), None)
    if entry is None:
        raise InputError(f"no figure for a {kind}")
    context = AnalysisContext(
        epoch=int(getattr(record, "epoch", 0) or 0), out_dir=Path(tempfile.gettempdir()), rank=0, world_size=1
    )
    cls = import_object(entry.callback)
    cb = cls.__new__(cls)  # plot() reads only the record and the context
    return cb.plot(record, context)
