"""`LayerAnalysisCallback`: the shared base of per-layer feature analyses (Fourier, variance).

The points come from `alternet_pl.analysis.layers` (the model's ``analysis_layers()``, or its
blocks found from timm's layout / the module tree); all the maths, the depth summary included, is
in the analysis's ``run``. The callback holds the options, checks them against the model before
training, and writes what ``run`` returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, ClassVar

import lightning.pytorch as pl
from torch import nn

from alternet_pl.analysis import features
from alternet_pl.analysis.layers import DEFAULT_KINDS, LayerOptions
from alternet_pl.callbacks.base import AnalysisCallback
from alternet_pl.callbacks.options import AnalysisData
from alternet_pl.errors import InputError

__all__ = ["LayerAnalysisCallback", "depth_summary", "json_settings"]


def depth_summary(
    model: nn.Module,
    names: Sequence[str],
    values: Sequence[float],
    prefix: str,
    log_ratio: bool = False,
    sizes: Sequence[int] | None = None,
) -> dict:
    """{"kinds", "depth", "scalars"} of one value per named point (`features.depth_summary`)."""
    kinds = features.layer_kinds(model, names)
    scalars = features.depth_summary(kinds, values, prefix, log_ratio=log_ratio, sizes=sizes)
    return {"kinds": kinds, "depth": features.normalized_depths(len(names)), "scalars": scalars}


def json_settings(options: Any) -> dict[str, Any]:
    """``asdict(options)`` with tuples as lists (what the settings file and `state_key` hold)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()}


class LayerAnalysisCallback(AnalysisCallback):
    """An analysis with one value per point of the model.

    Args:
        layers: name patterns over the model's points (``analysis_layers()`` names, or the
            discovered ``stem`` / block names such as ``layer1.0``, ``blocks.3.attn``), or naming any
            module (None: every point of the chosen kinds).
        kinds: the kinds to keep (default stem, conv, msa, mlp, other: the block outputs), or a
            mapping {name pattern: kind} relabelling points ("attention" is an alias of msa).
        data: the analysis batches (two by default: feature statistics settle quickly).
        schedule, log_images, strict: see `AnalysisCallback`.
    """

    #: the analysis's options class (``layers``, ``kinds``); its ``run`` is `run_analysis`
    options_class: ClassVar[type[Any]] = LayerOptions

    def __init__(
        self,
        layers: list[str] | None = None,
        kinds: tuple[str, ...] | dict[str, str] = DEFAULT_KINDS,
        data: AnalysisData = AnalysisData(num_batches=2),
        **kwargs: Any,
    ) -> None:
        super().__init__(data=data, **kwargs)
        kinds = dict(kinds) if isinstance(kinds, Mapping) else kinds if kinds is None else tuple(kinds)
        try:
            self.options = self.options_class(layers=None if layers is None else tuple(layers), kinds=kinds)
        except InputError as err:
            raise InputError(f"{type(self).__name__}: {err}") from None

    @property
    def layers(self) -> list[str] | None:
        return None if self.options.layers is None else list(self.options.layers)

    @property
    def kinds(self) -> tuple[str, ...] | dict[str, str]:
        return self.options.kinds

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), **json_settings(self.options)}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the points against the model before any training (raises `InputError`)."""
        model = getattr(pl_module, "model", pl_module)
        try:
            self.options.select(model)
        except InputError as err:
            raise InputError(f"{type(self).__name__}: {err}; fix its `layers` / `kinds` option") from None
