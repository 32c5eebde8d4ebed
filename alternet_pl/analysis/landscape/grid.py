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
from alternet_pl.analysis.weight_decay import split_penalty
from alternet_pl.errors import InputError

__all__ = ["CellSums", "LandscapeGrid", "evaluate_grid"]


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


@dataclass(frozen=True)
class CellSums:
    """One cell's additive statistics (what ranks exchange): the sum of batch-mean losses weighted by
    batch size, the sample count, correct predictions, the sum of squared per-sample losses (NaN when
    loss_fn returns none) and the penalty (NaN without one)."""

    index: int
    total: float
    count: int
    correct: float
    squares: float
    penalty: float


class _CellMover:
    """Sets the moved tensors to theta + sum_k a_k d_k for each cell, from the saved weights (no drift):
    the base of a grid row (all axes but the last) is built once per row."""

    def __init__(
        self, params: dict[str, nn.Parameter], dirs: Sequence[Directions], axes: list[np.ndarray]
    ) -> None:
        active = [n for n in params if any(bool(d[n].any()) for d in dirs)]  # the rest stay at theta
        self.targets = [params[n] for n in active]
        self.origin = [params[n].detach().clone() for n in active]
        self.steps = [[d[n].to(device=params[n].device, dtype=params[n].dtype) for n in active] for d in dirs]
        self.axes, self.row, self.base = axes, None, self.origin

    def move_to(self, cell: tuple[int, ...]) -> None:
        if not self.targets:
            return
        if cell[:-1] != self.row:  # a new row: rebuild its base once, from the saved weights
            self.row, self.base = cell[:-1], self.origin
            for k, i in enumerate(self.row):
                if self.axes[k][i] != 0.0:
                    self.base = torch._foreach_add(self.base, self.steps[k], alpha=float(self.axes[k][i]))
        torch._foreach_copy_(self.targets, self.base)  # each cell = row base + b * d_last
        last = float(self.axes[-1][cell[-1]])
        if last != 0.0:
            torch._foreach_add_(self.targets, self.steps[-1], alpha=last)


def _my_cells(
    model: nn.Module,
    data_loss: Callable,
    penalty_of: Callable | None,
    batches: list,
    mover: _CellMover,
    cells: list[int],
    shape: tuple[int, ...],
    progress: bool,
) -> list[CellSums]:
    """`CellSums` of this rank's cells (one host transfer at the end, so GPU work queues back to back)."""
    device = next(model.parameters()).device
    rows, counts = [], []
    for idx in progress_bar(cells, desc="landscape", enabled=progress):
        mover.move_to(np.unravel_index(idx, shape))
        sums, count = _eval_cell(model, data_loss, batches, device)  # [total, correct, squares]
        if penalty_of is not None:
            penalty = penalty_of(model).detach().to(device=device, dtype=torch.float64).reshape(1)
        else:
            penalty = torch.full((1,), math.nan, dtype=torch.float64, device=device)
        rows.append(torch.cat([sums, penalty]))
        counts.append(count)
    if not rows:
        return []
    table = torch.stack(rows).cpu().numpy()
    return [
        CellSums(index=idx, total=row[0], count=n, correct=row[1], squares=row[2], penalty=row[3])
        for idx, row, n in zip(cells, table, counts)
    ]


def _grid_from_cells(
    cells: list[CellSums], axes: list[np.ndarray], has_penalty: bool, rank: int
) -> LandscapeGrid:
    """The `LandscapeGrid` of every rank's `CellSums`, with notes on missing accuracies and bad cells."""
    shape = tuple(len(a) for a in axes)
    nll, acc, penalty, stderr = (np.full(shape, np.nan) for _ in range(4))
    for c in cells:
        cell = np.unravel_index(c.index, shape)
        nll[cell] = c.total / c.count if c.count else math.nan
        acc[cell] = c.correct / c.count if c.count else math.nan
        penalty[cell] = c.penalty
        stderr[cell] = _stderr(c.total, c.squares, c.count)
    loss = nll + penalty if has_penalty else nll.copy()
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
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return LandscapeGrid(
        loss=loss,
        nll=nll,
        acc=acc,
        penalty=penalty if has_penalty else None,
        loss_stderr=None if np.isnan(stderr).all() else stderr,
        nonfinite_cells=nonfinite,
        notes=notes,
    )


def evaluate_grid(
    model: nn.Module,
    loss_fn: Callable,
    batches: Iterable,
    dirs: Sequence[Directions],
    coords: Sequence[Sequence[float]],
    progress: bool = True,
) -> LandscapeGrid:
    """Mean loss and accuracy at theta + sum_k coords[k][i_k] * dirs[k], for every grid cell.

    With a loss that splits into a data term and a penalty (`PenalisedLoss`, e.g. ``WeightDecayLoss(inner,
    coefficient, form)``) the data term (averaged over the batches) and the penalty (once per cell) are
    also recorded apart. Cells are set from the saved
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
    data_loss, penalty_of = split_penalty(loss_fn)
    shape = tuple(len(a) for a in axes)
    rank, world = rank_and_world()
    check_same_batches(batches, "evaluate_grid")
    mine = list(range(int(np.prod(shape))))[rank::world]
    with restore_state(model, rng=True), torch.no_grad():
        model.eval()
        mover = _CellMover(params, dirs, axes)
        local = _my_cells(model, data_loss, penalty_of, batches, mover, mine, shape, progress)
    gathered = [c for part in all_gather_objects(local) for c in part]
    return _grid_from_cells(gathered, axes, penalty_of is not None, rank)
