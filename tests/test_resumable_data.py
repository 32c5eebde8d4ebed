"""`EpochSeededDataset`: each image drawn under its own seed, the global generators left alone.

The reference is the slow, obvious way: `seeded(sample_seed(...))` (Python, NumPy and every torch
generator seeded, all put back) around one `dataset[index]`."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from alternet_pl.analysis.state import seeded
from alternet_pl.data.resumable import EpochSeededDataset, ResumableSampler, sample_seed


class ThreeDraws(Dataset):
    """An 'augmentation' that draws from all three global generators."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> torch.Tensor:
        python, numpy = random.random(), float(np.random.rand())
        return torch.cat([torch.tensor([index, python, numpy], dtype=torch.float64), torch.rand(2).double()])


def _reference(seed: int, epoch: int, index: int) -> torch.Tensor:
    with seeded(sample_seed(seed, epoch, index)):
        return ThreeDraws()[index]


def _global_draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_items_equal_the_seeded_reference_and_leave_the_global_generators_alone():
    data = EpochSeededDataset(ThreeDraws(), seed=7)
    keys = [(2, 3), (2, 0), (5, 3), 4]
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    items = data.__getitems__(keys) + [data[(2, 3)]]
    after = _global_draws()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    assert after == _global_draws()  # as if no image had been loaded
    expected = [_reference(7, 2, 3), _reference(7, 2, 0), _reference(7, 5, 3), _reference(7, 0, 4)]
    for item, ref in zip(items, expected + [expected[0]]):
        torch.testing.assert_close(item, ref, rtol=0, atol=0)
    assert not torch.equal(items[0], items[2])  # another epoch, another draw


def test_loader_batches_equal_the_reference_items():
    sampler = ResumableSampler(ThreeDraws(), seed=3)
    sampler.set_epoch(1)
    loader = DataLoader(EpochSeededDataset(ThreeDraws(), seed=3), batch_size=4, sampler=sampler)
    batches = list(loader)
    order = [int(i) for batch in batches for i in batch[:, 0]]
    assert sorted(order) == list(range(10))
    expected = torch.stack([_reference(3, 1, i) for i in order])
    torch.testing.assert_close(torch.cat(batches), expected, rtol=0, atol=0)
