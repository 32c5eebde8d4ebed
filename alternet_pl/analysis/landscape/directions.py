"""Landscape directions: seeded Gaussian directions over the trainable parameters, normalised.

Which tensors get a zero direction (``ignore="biasbn"``, the default; ``ignore="none"`` zeroes none):
  * every tensor with fewer than 2 dims (biases, BN/LN affine, layer-scale gammas), as Li et al.;
  * position embeddings, class/distillation/register tokens and relative-position tables, matched by
    name: the parameter name, lower-cased, contains one of `SKIP_PATTERNS`;
  * by shape, any 3-D tensor with a leading dim of 1 that is not the weight of a Conv/Linear
    module: a batch-broadcast token or position table of shape (1, N, D) under some other name.
  With ``norm="official"`` the rule is the official code's instead: only tensors with fewer than 2
  dims and position tables (`OFFICIAL_SKIP_PATTERNS`: its keywords "pos_embed" and
  "relative_position", plus "rel_pos", this project's name for AlterNet's relative-position table)
  are zeroed; the CLS token and other (1, N, D) tokens ARE perturbed there.
Every other tensor is normalised per slice along dim 0 (one slice per conv filter / linear row).

Normalisations (``norm``), with d the Gaussian draw and theta the tensor's weights:
  * "filter": d[i] <- d[i] / ||d[i]|| * ||theta[i]|| for each slice i along dim 0 (Li et al.);
  * "official": the official how-do-vits-work code: norms taken *across* dim 0 (torch.norm(dim=0)),
    i.e. one norm per position of the remaining dims, d <- d * ||theta||_0 / (||d||_0 + 1e-7). Kept
    to reproduce the paper's figures; "filter" is the definition the paper cites;
  * "layer": d <- d / ||d|| * ||theta|| over the whole tensor; "none": the raw Gaussian draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.params import trainable_parameters
from alternet_pl.errors import InputError

__all__ = [
    "IGNORES",
    "NORMS",
    "OFFICIAL_SKIP_PATTERNS",
    "SKIP_PATTERNS",
    "Directions",
    "Ignore",
    "Norm",
    "directions_from_flat",
    "is_zeroed",
    "normalise",
    "random_directions",
]


Norm = Literal["filter", "layer", "official", "none"]
NORMS: tuple[str, ...] = get_args(Norm)
Ignore = Literal["biasbn", "none"]
IGNORES: tuple[str, ...] = get_args(Ignore)
SKIP_PATTERNS = (
    "pos_embed",
    "position_embed",
    "cls_token",
    "dist_token",
    "reg_token",
    "relative_position",
    "rel_pos",
    "pos_bias",
)
#: the official code's `kws=["pos_embed", "relative_position"]` (+ our name of the same table)
OFFICIAL_SKIP_PATTERNS = ("pos_embed", "relative_position", "rel_pos")

Directions = dict[str, torch.Tensor]


def _layer_weight_names(model: nn.Module) -> set[str]:
    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    return {
        f"{m_name}.weight" if m_name else "weight"
        for m_name, m in model.named_modules()
        if isinstance(m, kinds)
    }


def is_zeroed(
    name: str,
    tensor: torch.Tensor,
    layer_weights: set[str] = frozenset(),
    skip: Sequence[str] = SKIP_PATTERNS,
    by_shape: bool = True,
) -> bool:
    """The `ignore="biasbn"` rule of the module docstring: True when the direction is set to zero.

    `by_shape` adds the (1, N, D) table rule (off for the official rule)."""
    if tensor.ndim < 2:
        return True
    if any(p in name.lower() for p in skip):
        return True
    return by_shape and tensor.ndim == 3 and tensor.shape[0] == 1 and name not in layer_weights


def normalise(d: torch.Tensor, w: torch.Tensor, norm: Norm) -> torch.Tensor:
    """`d` scaled to the weights `w` (see module docstring), computed in float64, returned in w's dtype.

    Raises ValueError for an unknown `norm`."""
    d64, w64 = d.double(), w.detach().double()
    if norm == "none":
        out = d64
    elif norm == "layer" or d64.ndim == 0:
        out = d64 * (w64.norm() / d64.norm().clamp_min(1e-300))
    elif norm == "filter":
        dn = d64.reshape(d64.shape[0], -1).norm(dim=1).clamp_min(1e-300)
        wn = w64.reshape(w64.shape[0], -1).norm(dim=1)
        out = d64 * (wn / dn).reshape((-1,) + (1,) * (d64.ndim - 1))
    elif norm == "official":
        out = d64 * w64.norm(dim=0, keepdim=True) / (d64.norm(dim=0, keepdim=True) + 1e-7)
    else:
        raise InputError(f"norm={norm!r} not understood; choose one of {NORMS}")
    return out.to(dtype=w.dtype)


def random_directions(
    model: nn.Module,
    n: int = 2,
    seed: int = 0,
    norm: Norm = "filter",
    ignore: Ignore = "biasbn",
    skip: Sequence[str] | None = None,
) -> list[Directions]:
    """`n` seeded Gaussian directions {param_name: tensor} over the trainable parameters, normalised.

    `skip`: name patterns of zeroed tensors; None is `SKIP_PATTERNS` (`OFFICIAL_SKIP_PATTERNS` and no
    shape rule with ``norm="official"``). The draw uses its own CPU generator (global RNG untouched),
    so a seed gives the same directions on every rank and device. Zeroed tensors still consume their
    draw: the other tensors' directions do not depend on `ignore`. Returns a list of `n` dicts.
    Raises ValueError for a bad `n`, `norm` or `ignore`, or a model without trainable parameters.
    """
    if not isinstance(n, int) or n < 1:
        raise InputError(f"random_directions: n={n!r}; pass the number of directions, an int >= 1")
    if norm not in NORMS:
        raise InputError(f"random_directions: norm={norm!r} not understood; choose one of {NORMS}")
    if ignore not in IGNORES:
        raise InputError(f"random_directions: ignore={ignore!r} not understood; choose one of {IGNORES}")
    params = trainable_parameters(model)
    official = norm == "official"
    if skip is None:
        skip = OFFICIAL_SKIP_PATTERNS if official else SKIP_PATTERNS
    layer_weights = _layer_weight_names(model)
    gen = torch.Generator().manual_seed(int(seed))
    dirs = []
    for _ in range(n):
        d = {}
        for name, p in params.items():
            draw_dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
            r = torch.randn(p.shape, generator=gen, dtype=draw_dtype)
            if ignore == "biasbn" and is_zeroed(name, p, layer_weights, skip, by_shape=not official):
                d[name] = torch.zeros_like(p, memory_format=torch.contiguous_format).detach()
            else:
                d[name] = normalise(r, p.detach().cpu(), norm).to(p.device)
        dirs.append(d)
    return dirs


def directions_from_flat(model: nn.Module, vectors: np.ndarray | torch.Tensor) -> list[Directions]:
    """Split flat vectors (rows, over the trainable parameters in order) into {name: tensor} directions.

    Raises ValueError when the vectors' length is not the model's number of trainable parameters."""
    params = trainable_parameters(model)
    vecs = torch.as_tensor(np.asarray(vectors))
    vecs = vecs.reshape(1, -1) if vecs.ndim == 1 else vecs
    total = sum(p.numel() for p in params.values())
    if vecs.shape[1] != total:
        raise InputError(
            f"directions_from_flat: vectors have {vecs.shape[1]} entries but the model has {total} "
            "trainable parameters: they were made for another architecture"
        )
    out = []
    for row in vecs:
        d, start = {}, 0
        for name, p in params.items():
            d[name] = row[start : start + p.numel()].reshape(p.shape).to(device=p.device, dtype=p.dtype)
            start += p.numel()
        out.append(d)
    return out
