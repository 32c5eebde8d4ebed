"""Model zoo: importing this package registers every model in timm's registry.

``timm.create_model("alternet_cifar_50", num_classes=100)`` etc.; see ``alternet.py`` and ``vit_cifar.py``
for the names. ``analysis_layers(model)`` gives the named layers the analyses hook; ``load_official(path)``
loads the paper authors' checkpoints into these models (``official.py``).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from . import alternet, vit_cifar
from .alternet import AlterNet, place_msas, resolve_layout
from .official import OFFICIAL_LAYOUTS, OfficialArch, OfficialLayout, convert_official, load_official
from .taps import KINDS, Tap
from .vit_cifar import CifarPiT, CifarSwin, CifarViT

__all__ = [
    "KINDS",
    "OFFICIAL_LAYOUTS",
    "AlterNet",
    "CifarPiT",
    "CifarSwin",
    "CifarViT",
    "OfficialArch",
    "OfficialLayout",
    "Tap",
    "alternet",
    "analysis_layers",
    "convert_official",
    "load_official",
    "place_msas",
    "resolve_layout",
    "vit_cifar",
]


def analysis_layers(model: nn.Module) -> OrderedDict[str, Tap]:
    """``model.analysis_layers()``: ordered {name: Tap} of the layers Fourier/variance/lesion analyses use."""
    fn = getattr(model, "analysis_layers", None)
    if fn is None:
        raise TypeError(
            f"{type(model).__name__} has no analysis_layers(); use a model registered by alternet_pl.models"
        )
    return fn()
