"""`SameOrderSyntheticData`: the synthetic set, unaugmented, in the same order of global batches on any
number of processes (for comparing one process with N).

Its training sampler is a `DistributedSampler` over the Trainer's world (one process included) with a
fixed seed: every epoch one permutation p of the set, rank r taking p[r], p[r + N], ...; the ranks'
batches at step k are then together the single process's batch k. (Lightning's own DDP sampler shuffles
with another permutation than a single process's `RandomSampler`, so without this the two runs would
see different global batches.)
"""

from torch.utils.data import DataLoader, DistributedSampler

from alternet_pl.data import SyntheticDataModule


class SameOrderSyntheticData(SyntheticDataModule):
    """Training batches drawn by one seeded permutation on any number of processes; no augmentation."""

    def transform(self, train: bool):
        return super().transform(train=False)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = DistributedSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=0)
        return self._loader(self.train_set, shuffle=False, drop_last=self.drop_last, sampler=sampler)
