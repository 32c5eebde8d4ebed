"""What the analyses share among their options: the weight-decay term (and `errors.check_choice`).

Every analysis's options are a frozen dataclass that checks itself in `__post_init__` (one line,
`InputError`); `alternet_pl.callbacks` shows these groups nested in `--help` and `--print_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from alternet_pl.analysis.weight_decay import WeightDecayForm
from alternet_pl.errors import InputError, check_choice

__all__ = ["FOLLOW_TRAINING", "WeightDecayTerm", "resolve_weight_decay"]

#: the coefficient that follows the training run's own weight decay
FOLLOW_TRAINING = "train"


@dataclass(frozen=True)
class WeightDecayTerm:
    """A weight-decay term added to the analysed loss (0: the clean loss).

    Args:
        coefficient: its weight, or "train": the training run's own weight decay (the recipe's
            `weight_decay`, read when the analysis runs; the paper uses its AdamW value, 0.05).
        form: "norm" (coefficient * sum_p ||theta_p||_2 over parameter tensors, the official code's
            term) or "l2" (0.5 * coefficient * ||theta||^2, i.e. + coefficient * I in the Hessian).
    """

    coefficient: float | Literal["train"] = 0.0
    form: WeightDecayForm = "norm"

    def __post_init__(self) -> None:
        if self.coefficient != FOLLOW_TRAINING and not (
            isinstance(self.coefficient, int | float) and self.coefficient >= 0
        ):
            raise InputError(
                f"WeightDecayTerm: coefficient={self.coefficient!r}; use a number >= 0 or 'train'"
            )
        check_choice("WeightDecayTerm", "form", self.form, WeightDecayForm)

    @property
    def follows_training(self) -> bool:
        """True when the coefficient is the training run's ("train"), known only when it runs."""
        return self.coefficient == FOLLOW_TRAINING

    def resolved(self, training_weight_decay: float) -> WeightDecayTerm:
        """This term with "train" replaced by `training_weight_decay` (a number stays as it is)."""
        if not self.follows_training:
            return self
        return replace(self, coefficient=float(training_weight_decay))

    def value(self) -> float:
        """The coefficient as a number. Raises `InputError` while it is still "train"."""
        if self.follows_training:
            raise InputError(
                "WeightDecayTerm: coefficient='train' has no value outside a training run; resolve it "
                "with .resolved(weight_decay) (the callbacks do) or give a number"
            )
        return float(self.coefficient)


def resolve_weight_decay(options: Any, training_weight_decay: float) -> Any:
    """`options` (a frozen dataclass with a `weight_decay: WeightDecayTerm`) with "train" resolved."""
    term = getattr(options, "weight_decay", None)
    if not isinstance(term, WeightDecayTerm) or not term.follows_training:
        return options
    return replace(options, weight_decay=term.resolved(training_weight_decay))
