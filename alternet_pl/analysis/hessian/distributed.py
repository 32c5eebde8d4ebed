"""`DistributedHessianOperator`: the Hessian of the mean loss over the union of every rank's batches.

The only difference from `HessianOperator` is one all-reduce of the sample-weighted sums per
product, so every rank holds the same product and the (seeded, deterministic) algorithms agree on
all ranks. Without an initialised process group it is exactly `HessianOperator`.
"""

from __future__ import annotations

import torch

from alternet_pl.analysis.dist import all_reduce_sum, rank_and_world
from alternet_pl.analysis.hessian.operator import HessianOperator

__all__ = ["DistributedHessianOperator"]


class DistributedHessianOperator(HessianOperator):
    """`HessianOperator` whose products are all-reduced over ranks.

    Each rank passes its OWN shard of the data (e.g. ``batches[rank::world]``; a rank may hold
    none); every rank must call ``@`` the same number of times (the algorithms do, being seeded).
    """

    def _allows_empty(self) -> bool:
        return rank_and_world()[1] > 1

    def _reduce(self, total: torch.Tensor) -> None:
        all_reduce_sum(total)
