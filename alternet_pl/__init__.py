"""alternet-pl: train CNNs, ViTs and AlterNets and measure why they behave as they do.

Importing the package registers every model with timm (`timm.create_model("alternet_cifar_50")`) where
torch is installed; where it is not, plain-data modules (`alternet_pl.registry`, the report's readers)
still import. `analyze_model` /
`plot_record` (from `alternet_pl.api`) run the analyses on any `nn.Module`; imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "analyze_model", "models", "plot_record"]


def _torch_available() -> bool:
    """True where torch can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # blocked by an import hook, or a broken entry in sys.modules
        return False


if _torch_available():
    from alternet_pl import models  # noqa: F401  (registers the models with timm)


def __getattr__(name: str) -> Any:
    """`alternet_pl.models` (it imports torch and timm) and the `api` functions on first use."""
    if name == "models":
        return importlib.import_module("alternet_pl.models")
    if name in ("analyze_model", "plot_record"):
        return getattr(importlib.import_module("alternet_pl.api"), name)
    raise AttributeError(f"module 'alternet_pl' has no attribute {name!r}")
