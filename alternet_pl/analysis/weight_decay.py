"""Weight decay as a loss wrapper: the one definition of each penalty form, for the Hessian and the
loss landscape alike.

Forms (theta_p: one parameter tensor; the sum runs over every parameter of the model, as the
official code's `ops/norm.py: l2(model)` does):
  * "l2":   0.5 * wd * sum_p ||theta_p||^2  (its Hessian is wd * I: training's decoupled decay);
  * "norm": wd * sum_p ||theta_p||_2        (per-tensor norms, summed, not squared: the term the
    paper adds to the loss it plots and whose Hessian spectrum it shows).

Summing over *all* parameters (not only the ones an analysis selects or moves) keeps the function
the same whichever parameters are analysed: for a block-wise Hessian the other tensors' terms are
constants with no curvature in the block, and for a landscape the tensors a direction does not move
add the same constant to every cell. A tensor with ||theta_p|| = 0 adds 0 to the value and, in the
"norm" form, nothing to the derivatives (the norm has none there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import torch
from torch import nn

from alternet_pl.errors import InputError

__all__ = [
    "WEIGHT_DECAY_FORMS",
    "PenalisedLoss",
    "WeightDecayForm",
    "WeightDecayLoss",
    "split_penalty",
    "weight_penalty",
]

WeightDecayForm = Literal["l2", "norm"]
WEIGHT_DECAY_FORMS: tuple[str, ...] = get_args(WeightDecayForm)


def weight_penalty(model: nn.Module, form: WeightDecayForm = "norm") -> torch.Tensor:
    """The penalty without its coefficient: sum_p ||theta_p||_2 ("norm") or 0.5 * sum_p ||theta_p||^2
    ("l2"), over every parameter of `model`; differentiable. Raises ValueError for another form."""
    if form not in WEIGHT_DECAY_FORMS:
        raise InputError(f"weight-decay form {form!r}; choose one of {WEIGHT_DECAY_FORMS}")
    params = list(model.parameters())
    if not params:
        return torch.zeros(())
    if form == "l2":
        return 0.5 * sum((p * p).sum() for p in params)
    # a zero tensor adds 0 and must not enter the graph: ||p|| has no derivative at 0
    terms = [p.norm() for p in params if bool(p.detach().any())]
    return sum(terms) if terms else params[0].new_zeros(())


class WeightDecayLoss:
    """``loss_fn`` plus ``coefficient * weight_penalty(model, form)``, as a loss function itself.

    Call it as any analysis loss: ``WeightDecayLoss(cross_entropy_loss, 0.05)(model, batch) ->
    (loss_mean + penalty, num_samples[, num_correct])``. Adding the penalty to every batch's mean
    gives the penalty once in any sample-weighted average over batches (and ranks). `loss_fn` and
    `penalty(model)` stay reachable, so a landscape can record the data term and the penalty apart.
    """

    def __init__(self, loss_fn: Callable, coefficient: float, form: WeightDecayForm = "norm") -> None:
        if form not in WEIGHT_DECAY_FORMS:
            raise InputError(f"WeightDecayLoss: form={form!r}; choose one of {WEIGHT_DECAY_FORMS}")
        if not coefficient >= 0:
            raise InputError(f"WeightDecayLoss: coefficient={coefficient}; use a coefficient >= 0")
        self.loss_fn, self.coefficient, self.form = loss_fn, float(coefficient), form

    def __repr__(self) -> str:
        name = getattr(self.loss_fn, "__name__", repr(self.loss_fn))
        return f"WeightDecayLoss({name}, {self.coefficient}, {self.form!r})"

    def split(self) -> tuple[Callable, Callable[[nn.Module], torch.Tensor] | None]:
        """(`loss_fn`, `penalty`; None instead of a zero penalty): see `PenalisedLoss`."""
        return self.loss_fn, (self.penalty if self.coefficient else None)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``coefficient * weight_penalty(model, form)`` (differentiable)."""
        return self.coefficient * weight_penalty(model, self.form)

    def __call__(self, model: nn.Module, batch: Any) -> tuple:
        out = self.loss_fn(model, batch)
        if not isinstance(out, tuple | list) or len(out) < 2:
            raise TypeError(
                f"loss_fn must return (loss_mean, num_samples[, num_correct]), got {type(out).__name__}"
            )
        if not self.coefficient:
            return tuple(out)
        return (out[0] + self.penalty(model), *out[1:])


@runtime_checkable
class PenalisedLoss(Protocol):
    """A loss that is a data term plus a penalty of the weights (`WeightDecayLoss`, or a user's own):
    a landscape then records the two apart."""

    def split(self) -> tuple[Callable, Callable[[nn.Module], torch.Tensor] | None]:
        """(the data term `loss_fn(model, batch)`, the penalty `penalty(model)` or None when it is 0)."""
        ...


def split_penalty(loss_fn: Callable) -> tuple[Callable, Callable[[nn.Module], torch.Tensor] | None]:
    """(data term, penalty or None) of any loss: a `PenalisedLoss` splits itself, another is all data."""
    return loss_fn.split() if isinstance(loss_fn, PenalisedLoss) else (loss_fn, None)
