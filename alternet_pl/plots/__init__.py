"""Matplotlib figures from result files; no training code here."""

#: one colour / marker / label per block kind, shared by every figure
KIND_STYLE = {
    "msa": ("tab:red", "o", "MSA"),
    "conv": ("tab:blue", "s", "Conv"),
    "mlp": ("tab:green", "^", "MLP"),
    "stem": ("tab:gray", "D", "Stem"),
    "norm": ("tab:purple", "v", "Norm"),
    "pool": ("tab:brown", "x", "Pool"),
    "head": ("black", "*", "Head"),
}


def kind_color(kind: str) -> str:
    return KIND_STYLE.get(kind, ("0.3", "o", kind))[0]
