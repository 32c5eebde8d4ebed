"""Thin Lightning wrappers around the pure analyses in `alternet_pl.analysis`.

Every analysis callback is imported here; `alternet_pl.registry` names them (plain data, no torch).
Grouped options live in `options`.
"""

from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext, AnalysisFailure, AnalysisList
from alternet_pl.callbacks.fourier import FourierCallback
from alternet_pl.callbacks.hessian import HessianCallback
from alternet_pl.callbacks.landscape import LandscapeCallback, TrajectoryCallback
from alternet_pl.callbacks.layers import LayerAnalysisCallback
from alternet_pl.callbacks.lesion import LesionCallback
from alternet_pl.callbacks.options import (
    AnalysisData,
    DensityOptions,
    EigenOptions,
    Schedule,
    SpectrumOptions,
    TraceOptions,
    WeightDecayTerm,
)
from alternet_pl.callbacks.robustness import CorruptionCallback, FreqNoiseCallback
from alternet_pl.callbacks.variance import VarianceCallback

__all__ = [
    "AnalysisCallback",
    "AnalysisContext",
    "AnalysisData",
    "AnalysisFailure",
    "AnalysisList",
    "CorruptionCallback",
    "DensityOptions",
    "EigenOptions",
    "FourierCallback",
    "FreqNoiseCallback",
    "HessianCallback",
    "LandscapeCallback",
    "LayerAnalysisCallback",
    "LesionCallback",
    "Schedule",
    "SpectrumOptions",
    "TraceOptions",
    "TrajectoryCallback",
    "VarianceCallback",
    "WeightDecayTerm",
]
