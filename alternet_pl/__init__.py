"""alternet-pl: train CNNs, ViTs and AlterNets and measure why they behave as they do.

Importing the package registers every model with timm (`timm.create_model("alternet_cifar_50")`).
"""

from alternet_pl import models

__version__ = "0.1.0"

__all__ = ["__version__", "models"]
