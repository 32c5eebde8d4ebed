"""alternet-pl: train CNNs, ViTs and AlterNets and measure why they behave as they do.

`import alternet_pl.models` registers every model with timm (`timm.create_model("alternet_cifar_50")`);
the training module, `fit` and `analyze` import it themselves. The package itself imports no torch, so
plain-data modules (`alternet_pl.registry`, the report's readers) load without it. `analyze_model` /
`plot_record` (from `alternet_pl.api`) run the analyses on any `nn.Module`; imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "analyze_model", "models", "plot_record"]


def __getattr__(name: str) -> Any:
    """`alternet_pl.models` (it imports torch and timm) and the `api` functions on first use."""
    if name == "models":
        return importlib.import_module("alternet_pl.models")
    if name in ("analyze_model", "plot_record"):
        return getattr(importlib.import_module("alternet_pl.api"), name)
    raise AttributeError(f"module 'alternet_pl' has no attribute {name!r}")
