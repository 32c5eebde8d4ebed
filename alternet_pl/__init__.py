"""alternet-pl: train CNNs, ViTs and AlterNets and measure why they behave as they do.

`import alternet_pl.models` registers every model with timm (`timm.create_model("alternet_cifar_50")`);
the training module, `fit` and `analyze` import it themselves. The package itself imports no torch, so
plain-data modules (`alternet_pl.registry`, the report's readers) load without it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "models"]


def __getattr__(name: str) -> Any:
    """`alternet_pl.models` on first use (it imports torch and timm)."""
    if name == "models":
        return importlib.import_module("alternet_pl.models")
    raise AttributeError(f"module 'alternet_pl' has no attribute {name!r}")
