"""Training data that can stop and go on at any batch: what a mid-epoch checkpoint needs.

A resumed run must read the same images, in the same order, under the same random augmentations as
one that was never interrupted. Here none of that depends on a random generator's running state:

- `ResumableSampler` orders each epoch by a permutation of `(seed, epoch)` only (under DDP, each
  rank its share, as `DistributedSampler`) and can start an epoch after its first N samples;
- `EpochSeededDataset` draws each image's augmentation from its own seed, a hash of
  `(seed, epoch, index)`, with the global generators put back afterwards.

So the position in the data is two numbers, the epoch and the batches already read in it, which
`alternet_pl.training.resume.LoaderPosition` keeps in checkpoints; the loader's workers' random
states do not matter (the same batches with `num_workers` 0 or 8).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["EpochSeededDataset", "ResumableSampler", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one image in one epoch (a hash: neighbouring images get unrelated seeds)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class ResumableSampler(DistributedSampler):
    """Shuffled training order, a function of `(seed, epoch)`, that yields `(epoch, index)` keys.

    A `DistributedSampler` (Lightning keeps it as it is under DDP: each rank reads its share);
    `start_at(epoch, skip)` makes the next pass read that epoch from its `skip`-th sample on.
    Its length stays the whole epoch's, as Lightning counts the batches read before the restart.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset,
            num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0,
            shuffle=True,
            seed=seed,
        )
        self._skip = 0

    def start_at(self, epoch: int, skip: int) -> None:
        """Begin the next pass in `epoch`, after its first `skip` samples (of this rank)."""
        self.set_epoch(epoch)
        self._skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip, self._skip = self.epoch, self._skip, 0
        indices = list(super().__iter__())[skip:]
        return iter([(epoch, index) for index in indices])


class EpochSeededDataset(Dataset):
    """`dataset[index]` under its own seed for each `(epoch, index)` key of a `ResumableSampler`.

    Python's, NumPy's and torch's global generators are seeded for the one item (augmentations
    draw from them) and put back after it, so loading leaves the training's random stream alone.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int] | int]) -> list[Any]:
        """The items of a whole batch: the generators are saved once and put back once (saving
        NumPy's state and seeding every torch device per image cost 0.7 ms an image, a fifth of a
        micro model's step); each image is drawn from the CPU generators seeded as `seeded` seeds
        them, so the images are the same."""
        saved = random.getstate(), np.random.get_state(), torch.default_generator.get_state()
        try:
            items = []
            for key in keys:
                epoch, index = key if isinstance(key, tuple) else (0, key)
                seed = sample_seed(self.seed, epoch, index)
                random.seed(seed)
                np.random.seed(seed)
                torch.default_generator.manual_seed(seed)
                items.append(self.dataset[index])
            return items
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.default_generator.set_state(saved[2])
