"""Loss-landscape grids (Li et al. 2018): f(a, b, ...) = L(theta + a*d1 + b*d2 + ...) at every cell.

The loss plotted with a weight-decay term (the paper's NLL + wd * sum_p ||theta_p||_2) is
``WeightDecayLoss(cross_entropy_loss, wd)``: `evaluate_grid` then records the data term and the
penalty apart as well.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from alternet_pl.analysis.dist import all_gather_objects, check_same_batches, rank_and_world
from alternet_pl.analysis.landscape.directions import Directions
from alternet_pl.analysis.params import trainable_parameters
from alternet_pl.analysis.progress import progress as progress_bar
from alternet_pl.analysis.state import restore_state, to_device
from alternet_pl.analysis.weight_decay import WeightDecayLoss
from alternet_pl.errors import InputError

__all__ = ["LandscapeGrid", "evaluate_grid"]


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
            raise InputError(
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
            raise InputError(
                f"evaluate_grid: direction {k} has shapes that differ from the model's: {bad[:5]}; "
                "regenerate the directions with random_directions(model) for this model"
            )


def _check_coords(coords: Sequence, n_dirs: int) -> list[np.ndarray]:
    if isinstance(coords, np.ndarray | torch.Tensor) and np.ndim(coords) == 1:
        raise InputError(
            "evaluate_grid: coords must hold one 1-D sequence per direction, e.g. [np.linspace(-1, 1, 21)] "
            "for one direction (got a single 1-D array)"
        )
    if len(coords) != n_dirs:
        raise InputError(
            f"evaluate_grid: got {len(coords)} coordinate sequences for {n_dirs} directions; "
            "pass exactly one 1-D sequence per direction"
        )
    out = []
    for k, c in enumerate(coords):
        arr = np.asarray(c.cpu() if isinstance(c, torch.Tensor) else c, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise InputError(
                f"evaluate_grid: coords[{k}] has shape {arr.shape}; each must be a non-empty 1-D "
                "sequence such as np.linspace(-1, 1, 21)"
            )
        if not np.all(np.isfinite(arr)):
            raise InputError(f"evaluate_grid: coords[{k}] contains NaN or inf; pass finite coordinates")
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
    loss_stderr: np.ndarray | None = None
    nonfinite_cells: list[tuple[float, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _eval_cell(
    model: nn.Module, loss_fn: Callable, batches: list, device: torch.device
) -> tuple[torch.Tensor, int]:
    """([sum of losses, number correct, sum of squared per-sample losses] as a float64 tensor on
    `device` (NaN for what loss_fn does not return), samples).

    Sums stay on the device (no host sync per batch), so GPU work is queued back to back.
    """
    acc = torch.zeros(3, dtype=torch.float64, device=device)
    count = 0
    with torch.inference_mode():
        for batch in batches:
            out = loss_fn(model, batch)
            if not isinstance(out, tuple | list) or len(out) not in (2, 3, 4):
                raise TypeError(
                    "evaluate_grid: loss_fn must return (loss_mean, num_samples[, num_correct"
                    f"[, per_sample_losses]]) (got {type(out).__name__}); see "
                    "alternet_pl.analysis.loss.cross_entropy_loss"
                )
            n = int(out[1])
            acc[0] += torch.as_tensor(out[0], device=device).detach().double() * n
            acc[1] += torch.as_tensor(out[2], device=device).double() if len(out) >= 3 else math.nan
            if len(out) == 4:
                per_sample = torch.as_tensor(out[3], device=device).detach().double().reshape(-1)
                if per_sample.numel() != n:
                    raise InputError(
                        f"evaluate_grid: loss_fn returned {per_sample.numel()} per-sample losses for "
                        f"{n} samples; return one loss per sample (reduction='none')"
                    )
                acc[2] += (per_sample * per_sample).sum()
            else:
                acc[2] += math.nan
            count += n
    return acc, count


def _stderr(total: float, squares: float, count: int) -> float:
    """Standard error of a mean from the sum and the sum of squares of `count` values (NaN if < 2)."""
    if count < 2 or not math.isfinite(squares):
        return math.nan
    mean = total / count
    var = max(squares / count - mean * mean, 0.0) * count / (count - 1)
    return math.sqrt(var / count)


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
        raise InputError("evaluate_grid: batches is empty; pass at least one (images, labels) batch")
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
            results = [(idx, row[0], n, row[1], row[3], row[2]) for idx, row, n in zip(mine, table, counts)]
    gathered = [r for part in all_gather_objects(results) for r in part]
    nll, acc, penalty, stderr = (np.full(shape, np.nan) for _ in range(4))
    for idx, total, count, correct, pen, squares in gathered:
        cell = np.unravel_index(idx, shape)
        nll[cell] = total / count if count else math.nan
        acc[cell] = correct / count if count else math.nan
        penalty[cell] = pen
        stderr[cell] = _stderr(total, squares, count)
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
        loss_stderr=None if np.isnan(stderr).all() else stderr,
        nonfinite_cells=nonfinite,
        notes=notes,
    )
