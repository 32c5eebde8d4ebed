"""Matplotlib figures from result files; no training code here.

One palette for every figure: a colour / marker / label per block kind (`KIND_STYLE`) and a colour
per model family (`MODEL_STYLE`, picked from the model's name by `model_family`), so ResNet is the
same blue and an MSA the same red marker in every figure of the report and of the callbacks.
"""

from __future__ import annotations

__all__ = ["KIND_STYLE", "MODEL_STYLE", "kind_color", "model_family", "model_color", "model_label"]

#: one colour / marker / label per block kind, shared by every figure
KIND_STYLE = {
    "msa": ("tab:red", "o", "MSA"),
    "conv": ("tab:blue", "s", "Conv"),
    "mlp": ("tab:green", "^", "MLP"),
    "stem": ("tab:gray", "D", "Stem"),
    "norm": ("tab:purple", "v", "Norm"),
    "pool": ("tab:brown", "x", "Pool"),
    "head": ("black", "*", "Head"),
    "other": ("tab:olive", "P", "Other"),
}

#: one colour and display name per model family (ResNet is all Conv: blue; ViT all MSA: red),
#: checked in this order against the lower-cased model name
MODEL_STYLE: dict[str, tuple[str, str]] = {
    "alter": ("tab:purple", "AlterNet"),
    "pit": ("tab:orange", "PiT"),
    "swin": ("tab:cyan", "Swin"),
    "vit": ("tab:red", "ViT"),
    "resnet": ("tab:blue", "ResNet"),
}
#: colours for models of no known family, in order of first appearance
_OTHER_COLORS = ("tab:olive", "tab:pink", "tab:brown", "tab:gray", "black")


def kind_color(kind: str) -> str:
    return KIND_STYLE.get(kind, ("0.3", "o", kind))[0]


def model_family(model_name: str) -> str:
    """The `MODEL_STYLE` key of a model name ("vit_cifar_micro" -> "vit"); "" when none matches."""
    name = model_name.lower()
    return next((family for family in MODEL_STYLE if family in name), "")


def model_color(model_name: str) -> str:
    """The colour of a model's family; unknown families get a fixed colour from their name."""
    family = model_family(model_name)
    if family:
        return MODEL_STYLE[family][0]
    return _OTHER_COLORS[sum(map(ord, model_name)) % len(_OTHER_COLORS)]


def model_label(model_name: str) -> str:
    """The family's display name ("ViT"), or the model name itself."""
    family = model_family(model_name)
    return MODEL_STYLE[family][1] if family else model_name
