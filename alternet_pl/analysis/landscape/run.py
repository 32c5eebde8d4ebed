"""The loss-landscape analysis as one function: `run(model, loss_fn, batches, options) -> LandscapeRecord`.

Random directions (`random_directions`), the loss on a `steps`^`dims` grid over [-span, span]
(`evaluate_grid`), the loss at theta and the sharpness summary (`analysis.sharpness`), once, here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from torch import nn

from alternet_pl.analysis.landscape.directions import IGNORES, NORMS, Ignore, Norm, random_directions
from alternet_pl.analysis.landscape.grid import evaluate_grid
from alternet_pl.analysis.options import WeightDecayTerm, check_choice
from alternet_pl.analysis.records import LandscapeRecord
from alternet_pl.analysis.sharpness import grid_sharpness
from alternet_pl.analysis.weight_decay import WeightDecayLoss
from alternet_pl.errors import InputError

__all__ = ["LandscapeOptions", "run"]


@dataclass(frozen=True)
class LandscapeOptions:
    """Everything that changes a landscape.

    Args:
        steps: grid points per direction (odd keeps theta itself on the grid).
        span: the grid covers [-span, span] in units of the normalised directions.
        dims: 1 (a curve) or 2 (a surface).
        norm, ignore: direction normalisation and which tensors stay fixed (`random_directions`).
        weight_decay: the paper's term coefficient * sum_p ||theta_p||_2 added to the plotted loss
            (form "norm"; coefficient 0: the clean loss; "train": the training run's weight decay).
        seed: seeds the random directions.
    """

    steps: int = 21
    span: float = 1.0
    dims: Literal[1, 2] = 2
    norm: Norm = "filter"
    ignore: Ignore = "biasbn"
    weight_decay: WeightDecayTerm = field(default_factory=WeightDecayTerm)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dims not in (1, 2):
            raise InputError(f"LandscapeOptions: dims={self.dims}; choose 1 (curve) or 2 (surface)")
        if self.steps < 2:
            raise InputError(
                f"LandscapeOptions: steps={self.steps}; use at least 2 points per direction (e.g. 21)"
            )
        if not self.span > 0:
            raise InputError(f"LandscapeOptions: span={self.span}; use a positive half-width such as 1.0")
        check_choice("LandscapeOptions", "norm", self.norm, NORMS)
        check_choice("LandscapeOptions", "ignore", self.ignore, IGNORES)
        if self.weight_decay.form != "norm" and self.weight_decay.coefficient:
            raise InputError(
                f"LandscapeOptions: weight_decay.form={self.weight_decay.form!r}; the landscape adds the "
                "paper's term coefficient * sum_p ||theta_p||_2: use form 'norm'"
            )


def run(model: nn.Module, loss_fn: Callable, batches: list, options: LandscapeOptions) -> LandscapeRecord:
    """The landscape of `loss_fn` (+ `options.weight_decay`) over `batches` around the model's weights.

    Every rank passes the same full list of batches (the grid's cells are split over ranks). Returns
    a `LandscapeRecord` with the sharpness summary; the weights come back bit-identical. Raises
    `InputError` for a weight-decay coefficient still "train".
    """
    coefficient = options.weight_decay.value()
    if coefficient:  # the paper's plotted loss: NLL + coefficient * sum_p ||theta_p||_2
        loss_fn = WeightDecayLoss(loss_fn, coefficient, options.weight_decay.form)
    dims, steps = options.dims, options.steps
    dirs = random_directions(model, n=dims, seed=options.seed, norm=options.norm, ignore=options.ignore)
    axis = np.linspace(-options.span, options.span, steps)
    grid = evaluate_grid(model, loss_fn, batches, dirs, [axis] * dims)
    if steps % 2:
        mid = (steps // 2,) * dims
        center, center_acc = float(grid.loss[mid]), float(grid.acc[mid])
    else:  # theta is not a grid point: one extra evaluation
        c = evaluate_grid(model, loss_fn, batches, dirs, [[0.0]] * dims, progress=False)
        center, center_acc = float(c.loss.item()), float(c.acc.item())
    edge_increase, max_increase = grid_sharpness(grid.loss, center)
    return LandscapeRecord(
        coords=axis,
        loss=grid.loss,
        nll=grid.nll,
        acc=grid.acc,
        l2=None if grid.penalty is None else grid.penalty / coefficient,  # sum_p ||theta_p||, the CSV's l2
        loss_stderr=grid.loss_stderr,
        center_loss=center,
        center_acc=center_acc,
        edge_increase=edge_increase,
        max_increase=max_increase,
        num_samples=sum(int(b[1].shape[0]) for b in batches),
        nonfinite_cells=[list(map(float, c)) for c in grid.nonfinite_cells],
        notes=list(grid.notes),
    )
