"""`RecipeInfo`: what an analysis callback may learn about the training recipe, and nothing more.

Callbacks schedule "at the end of warm-up", draw augmented batches through the training Mixup/CutMix, and
follow the training weight decay (`coefficient: train`). They read these three facts through this
Protocol instead of reaching into the LightningModule's attributes; any module that has them (ours, or a
user's) qualifies, and a module without them gets the plain defaults (no warm-up, no Mixup, no decay).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["RecipeInfo", "recipe_info"]


@runtime_checkable
class RecipeInfo(Protocol):
    """The recipe facts a callback may read: warm-up length, the batch mixer, the training weight decay."""

    @property
    def warmup_epochs(self) -> int: ...

    @property
    def mixup_fn(self) -> Callable[[Any, Any], tuple[Any, Any]] | None: ...

    @property
    def weight_decay(self) -> float: ...


class _NoRecipe:
    """The defaults for a module that does not describe its recipe."""

    warmup_epochs = 0
    mixup_fn = None
    weight_decay = 0.0


def recipe_info(module: object) -> RecipeInfo:
    """`module` itself when it follows `RecipeInfo`, else the defaults (no warm-up, no Mixup, no decay)."""
    return module if isinstance(module, RecipeInfo) else _NoRecipe()
