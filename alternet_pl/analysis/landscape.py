"""Loss landscapes (Li et al. 2018): f(a, b) = L(theta + a*d1 + b*d2) on filter-normalised directions.

`random_directions` draws Gaussian directions over the trainable parameters and normalises them;
`evaluate_grid` evaluates the mean loss (and accuracy) at every cell of a 1-D/2-D/... grid.

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

The loss plotted with a weight-decay term (the paper's NLL + wd * sum_p ||theta_p||_2) is
``WeightDecayLoss(cross_entropy_loss, wd)``: `evaluate_grid` then records the data term and the
penalty apart as well.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.dist import all_gather_objects, check_same_batches, rank_and_world
from alternet_pl.analysis.params import trainable_parameters
from alternet_pl.analysis.progress import progress as progress_bar
from alternet_pl.analysis.state import restore_state, to_device
from alternet_pl.analysis.weight_decay import WeightDecayLoss

__all__ = [
    "IGNORES",
    "NORMS",
    "OFFICIAL_SKIP_PATTERNS",
    "SKIP_PATTERNS",
    "Directions",
    "Ignore",
    "LandscapeGrid",
    "Norm",
    "directions_from_flat",
    "evaluate_grid",
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
        raise ValueError(f"norm={norm!r} not understood; choose one of {NORMS}")
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
        raise ValueError(f"random_directions: n={n!r}; pass the number of directions, an int >= 1")
    if norm not in NORMS:
        raise ValueError(f"random_directions: norm={norm!r} not understood; choose one of {NORMS}")
    if ignore not in IGNORES:
        raise ValueError(f"random_directions: ignore={ignore!r} not understood; choose one of {IGNORES}")
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


# ---- grid evaluation ---------------------------------------------------------------------------------
def _check_directions(dirs: Sequence[Directions], params: dict[str, nn.Parameter]) -> None:
    if isinstance(dirs, dict) or not isinstance(dirs, Sequence) or len(dirs) == 0:
        raise TypeError(
            "evaluate_grid: dirs must be a non-empty list of {param_name: tensor} dicts "
            "(wrap a single direction in a list: [d])"
        )
    for k, d in enumerate(dirs):
        if not isinstance(d, dict):
            raise TypeError(
                f"evaluate_grid: dirs[{k}] is a {type(d).__name__}, expected {{param_name: tensor}}"
            )
        missing = [n for n in params if n not in d]
        extra = [n for n in d if n not in params]
        if missing or extra:
            raise ValueError(
                f"evaluate_grid: direction {k} does not match the model's trainable parameters: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), unexpected "
                f"{extra[:5]}{'...' if len(extra) > 5 else ''} ({len(extra)}). Directions must come from "
                "random_directions(model) on this same architecture (a checkpoint or direction file of "
                "another architecture does not fit)"
            )
        bad = [
            f"{n}: {tuple(d[n].shape)} vs {tuple(p.shape)}"
            for n, p in params.items()
            if d[n].shape != p.shape
        ]
        if bad:
            raise ValueError(
                f"evaluate_grid: direction {k} has shapes that differ from the model's: {bad[:5]}; "
                "regenerate the directions with random_directions(model) for this model"
            )


def _check_coords(coords: Sequence, n_dirs: int) -> list[np.ndarray]:
    if isinstance(coords, np.ndarray | torch.Tensor) and np.ndim(coords) == 1:
        raise ValueError(
            "evaluate_grid: coords must hold one 1-D sequence per direction, e.g. [np.linspace(-1, 1, 21)] "
            "for one direction (got a single 1-D array)"
        )
    if len(coords) != n_dirs:
        raise ValueError(
            f"evaluate_grid: got {len(coords)} coordinate sequences for {n_dirs} directions; "
            "pass exactly one 1-D sequence per direction"
        )
    out = []
    for k, c in enumerate(coords):
        arr = np.asarray(c.cpu() if isinstance(c, torch.Tensor) else c, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(
                f"evaluate_grid: coords[{k}] has shape {arr.shape}; each must be a non-empty 1-D "
                "sequence such as np.linspace(-1, 1, 21)"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"evaluate_grid: coords[{k}] contains NaN or inf; pass finite coordinates")
        out.append(arr)
    return out


@dataclass(frozen=True, eq=False)
class LandscapeGrid:
    """`evaluate_grid`'s result; every array has the grid's shape (len(coords[0]), len(coords[1]), ...).

    loss: the mean of `loss_fn` (with a `WeightDecayLoss`: nll + its penalty, the paper's plotted
    loss); nll: the data term alone (= loss without weight decay); acc: accuracy (NaN when loss_fn
    returns no correct count); penalty: the weight-decay term wd * sum_p ||theta_p|| per cell, None
    without weight decay; nonfinite_cells: coordinates of NaN/inf losses; notes: what to know.
    """

    loss: np.ndarray
    nll: np.ndarray
    acc: np.ndarray
    penalty: np.ndarray | None = None
    nonfinite_cells: list[tuple[float, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _eval_cell(
    model: nn.Module, loss_fn: Callable, batches: list, device: torch.device
) -> tuple[torch.Tensor, int]:
    """([sum of per-sample losses, number correct or NaN] as a float64 tensor on `device`, samples).

    Sums stay on the device (no host sync per batch), so GPU work is queued back to back.
    """
    acc = torch.zeros(2, dtype=torch.float64, device=device)
    count = 0
    with torch.inference_mode():
        for batch in batches:
            out = loss_fn(model, batch)
            if not isinstance(out, tuple | list) or len(out) not in (2, 3):
                raise TypeError(
                    "evaluate_grid: loss_fn must return (loss_mean, num_samples[, num_correct]) "
                    f"(got {type(out).__name__}); see alternet_pl.analysis.loss.cross_entropy_loss"
                )
            n = int(out[1])
            acc[0] += torch.as_tensor(out[0], device=device).detach().double() * n
            acc[1] += torch.as_tensor(out[2], device=device).double() if len(out) == 3 else math.nan
            count += n
    return acc, count


def evaluate_grid(
    model: nn.Module,
    loss_fn: Callable,
    batches: Iterable,
    dirs: Sequence[Directions],
    coords: Sequence[Sequence[float]],
    progress: bool = True,
) -> LandscapeGrid:
    """Mean loss and accuracy at theta + sum_k coords[k][i_k] * dirs[k], for every grid cell.

    With ``loss_fn = WeightDecayLoss(inner, wd, form)`` the data term (`inner`, averaged over the
    batches) and the penalty (once per cell) are also recorded apart. Cells are set from the saved
    weights (no drift), the model runs in eval mode (BN statistics untouched), and everything is
    restored bit-identically afterwards. Under torch.distributed the cells are split round-robin over
    ranks and gathered: every rank returns the same arrays; every rank must pass the SAME full list
    of batches (not a per-rank shard from a DistributedSampler): the work is split by cells.
    Returns a `LandscapeGrid`; NaN/inf cells are recorded and warned about. Raises TypeError /
    ValueError for directions or coordinates that do not fit the model, or an empty batch list.
    """
    params = trainable_parameters(model)
    _check_directions(dirs, params)
    axes = _check_coords(coords, len(dirs))
    device = next(iter(params.values())).device
    batches = [to_device(b, device) for b in batches]
    if not batches:
        raise ValueError("evaluate_grid: batches is empty; pass at least one (images, labels) batch")
    decay = loss_fn if isinstance(loss_fn, WeightDecayLoss) and loss_fn.weight_decay else None
    data_loss = decay.loss_fn if decay is not None else loss_fn
    shape = tuple(len(a) for a in axes)
    rank, world = rank_and_world()
    check_same_batches(batches, "evaluate_grid")
    mine = list(range(int(np.prod(shape))))[rank::world]
    results = []
    with restore_state(model, rng=True), torch.no_grad():
        model.eval()
        # Only tensors some direction moves are touched per cell; the rest stay at theta.
        active = [n for n in params if any(bool(d[n].any()) for d in dirs)]
        targets = [params[n] for n in active]
        origin = [params[n].detach().clone() for n in active]
        steps = [[d[n].to(device=params[n].device, dtype=params[n].dtype) for n in active] for d in dirs]
        sums, counts = [], []
        base_key, base = None, origin  # theta + the moves along all but the last axis, per grid row
        for idx in progress_bar(mine, desc="landscape", enabled=progress):
            cell = np.unravel_index(idx, shape)
            if targets:
                if cell[:-1] != base_key:  # a new row: rebuild its base once, from the saved weights
                    base_key, base = cell[:-1], origin
                    for k, i in enumerate(base_key):
                        if axes[k][i] != 0.0:
                            base = torch._foreach_add(base, steps[k], alpha=float(axes[k][i]))
                torch._foreach_copy_(targets, base)  # each cell = row base + b * d_last: no drift
                last = float(axes[-1][cell[-1]])
                if last != 0.0:
                    torch._foreach_add_(targets, steps[-1], alpha=last)
            cell_sums, count = _eval_cell(model, data_loss, batches, device)
            if decay is not None:
                penalty = decay.penalty(model).detach().to(device=device, dtype=torch.float64).reshape(1)
            else:
                penalty = torch.full((1,), math.nan, dtype=torch.float64, device=device)
            sums.append(torch.cat([cell_sums, penalty]))
            counts.append(count)
        if sums:  # one host transfer for all of this rank's cells
            table = torch.stack(sums).cpu().numpy()
            results = [(idx, row[0], n, row[1], row[2]) for idx, row, n in zip(mine, table, counts)]
    gathered = [r for part in all_gather_objects(results) for r in part]
    nll, acc, penalty = (np.full(shape, np.nan) for _ in range(3))
    for idx, total, count, correct, pen in gathered:
        cell = np.unravel_index(idx, shape)
        nll[cell] = total / count if count else math.nan
        acc[cell] = correct / count if count else math.nan
        penalty[cell] = pen
    loss = nll + penalty if decay is not None else nll.copy()
    notes = []
    if np.isnan(acc).all():
        notes.append(
            "acc is NaN: loss_fn returned (loss, n) without num_correct; return "
            "(loss, n, num_correct) as cross_entropy_loss does to get accuracies"
        )
    bad = np.argwhere(~np.isfinite(loss))
    nonfinite = [tuple(float(axes[k][i]) for k, i in enumerate(c)) for c in bad]
    if len(bad):
        msg = (
            f"evaluate_grid: the loss is NaN/inf at {len(bad)} of {nll.size} cells (recorded as is): "
            f"{nonfinite[:10]}{' ...' if len(bad) > 10 else ''}"
        )
        notes.append(msg)
        if rank == 0:  # every rank holds the same note; one warning is enough
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return LandscapeGrid(
        loss=loss,
        nll=nll,
        acc=acc,
        penalty=penalty if decay is not None else None,
        nonfinite_cells=nonfinite,
        notes=notes,
    )


def directions_from_flat(model: nn.Module, vectors: np.ndarray | torch.Tensor) -> list[Directions]:
    """Split flat vectors (rows, over the trainable parameters in order) into {name: tensor} directions.

    Raises ValueError when the vectors' length is not the model's number of trainable parameters."""
    params = trainable_parameters(model)
    vecs = torch.as_tensor(np.asarray(vectors))
    vecs = vecs.reshape(1, -1) if vecs.ndim == 1 else vecs
    total = sum(p.numel() for p in params.values())
    if vecs.shape[1] != total:
        raise ValueError(
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
