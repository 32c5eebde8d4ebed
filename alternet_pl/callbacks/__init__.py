"""Thin Lightning wrappers around the pure analyses in `alternet_pl.analysis`.

Every module in this package is imported here so that each `AnalysisCallback` subclass registers
its `name` in `ANALYSES` (used by `python -m alternet_pl.analyze --analysis NAME`).
"""

import importlib
import pkgutil

from alternet_pl.callbacks.base import ANALYSES, AnalysisCallback, AnalysisContext, AnalysisResult

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["ANALYSES", "AnalysisCallback", "AnalysisContext", "AnalysisResult"]
