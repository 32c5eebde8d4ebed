"""`ImageDataModule`: the knobs every data set shares, and fixed batches for the analyses."""

from __future__ import annotations

import os
from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from alternet_pl.analysis.state import seeded
from alternet_pl.data.resumable import EpochSeededDataset, ResumableSampler
from alternet_pl.data.transforms import build_transform
from alternet_pl.errors import InputError
from alternet_pl.training.scaling import Scaling, device_batch_size


class ImageDataModule(pl.LightningDataModule):
    """Base for all data modules: subclasses set statistics and build `train_set` / `val_set`.

    Subclasses implement `build_datasets(train_transform, eval_transform) -> (train, val)`, where
    each dataset yields `(image, label)` after applying its transform to a PIL image.
    """

    num_classes: int = 0
    image_size: int = 32
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    transform_style: str = "cifar"
    #: training random-crop padding, in pixels ("cifar" style; 0: no crop)
    crop_padding: int = 4
    #: "faithful": `batch_size` is the global batch, split over the devices; "fast": every device loads
    #: `batch_size` (`fit --scaling` sets it)
    scaling: Scaling = "faithful"

    def __init__(
        self,
        batch_size: int = 96,
        num_workers: int = 0,
        auto_augment: str | None = "rand-m9-n2-mstd1.0",
        re_prob: float = 0.0,
        hflip: float = 0.5,
        drop_last: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.auto_augment = auto_augment or None
        self.re_prob = re_prob
        self.hflip = hflip
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._start: tuple[int, int] | None = None  # (epoch, batches read in it) of a resumed run

    # ---- to implement -----------------------------------------------------------------------
    def build_datasets(self, train_transform: Callable, eval_transform: Callable) -> tuple[Dataset, Dataset]:
        raise NotImplementedError

    # ---- transforms -------------------------------------------------------------------------
    def transform(self, train: bool) -> Callable:
        return build_transform(
            self.image_size,
            self.mean,
            self.std,
            train=train,
            style=self.transform_style,
            auto_augment=self.auto_augment,
            re_prob=self.re_prob,
            hflip=self.hflip,
            crop_padding=self.crop_padding,
        )

    # ---- Lightning --------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            train_set, val_set = self.build_datasets(self.transform(True), self.transform(False))
            self.check_sizes(train_set, val_set)
            self.train_set, self.val_set = train_set, val_set

    def check_sizes(self, train_set: Dataset, val_set: Dataset) -> None:
        """Refuse, before any training, splits that would give no batch at all.

        Raises `InputError` for an empty split, and for a training set smaller than one batch
        when `drop_last` would drop it whole (an epoch of zero steps).
        """
        for split, dataset in (("train", train_set), ("val", val_set)):
            if len(dataset) == 0:
                raise InputError(
                    f"{type(self).__name__}: the {split} split is empty; point the data module at a "
                    f"folder with {split} images"
                )
        if self.drop_last and len(train_set) < self.batch_size:
            raise InputError(
                f"{type(self).__name__}: batch_size={self.batch_size} is larger than the {len(train_set)} "
                f"training images and drop_last=True drops that one partial batch (zero training steps); "
                f"set --data.init_args.batch_size<={len(train_set)} or --data.init_args.drop_last=false"
            )

    def device_batch_size(self) -> int:
        """Images per device and step: `batch_size` split over the Trainer's devices and gradient
        accumulation ("faithful"), or `batch_size` itself ("fast").

        Raises `InputError` when a faithful split does not divide.
        """
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        accumulation = trainer.accumulate_grad_batches if trainer is not None else 1
        return device_batch_size(self.batch_size, world, accumulation, self.scaling)

    def _loader(
        self, dataset: Dataset, shuffle: bool, drop_last: bool, sampler: Sampler | None = None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.device_batch_size(),
            shuffle=shuffle if sampler is None else None,
            sampler=sampler,
            # loaders draw their worker seeds from their own generator, not the global one: a resumed
            # run's extra sanity-check pass and re-created iterators leave the training RNG stream alone
            generator=torch.Generator().manual_seed(0),
            num_workers=self.num_workers,
            drop_last=drop_last,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def resume_at(self, epoch: int, batches: int) -> None:
        """Make the next training loader start in `epoch` after its first `batches` batches
        (called on resume by `alternet_pl.training.resume.LoaderPosition`)."""
        self._start = (epoch, batches)

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented batches whose order and augmentations depend only on the seed, the
        epoch and the position (see `alternet_pl.data.resumable`): resumable at any batch."""
        self.setup()
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # `seed_everything`'s (fit's --seed_everything)
        sampler = ResumableSampler(self.train_set, seed=seed)
        if self._start is not None:
            epoch, batches = self._start
            sampler.start_at(epoch, batches * self.device_batch_size())  # this rank's samples
            self._start = None
        dataset = EpochSeededDataset(self.train_set, seed=seed)
        return self._loader(dataset, shuffle=True, drop_last=self.drop_last, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(
            self.val_set, shuffle=False, drop_last=False, sampler=evaluation_sampler(self.val_set)
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    # ---- analyses ---------------------------------------------------------------------------
    def analysis_batches(
        self,
        split: str = "val",
        num_batches: int = 4,
        batch_size: int | None = None,
        augment: bool = False,
        seed: int = 0,
        mixup_fn: Callable | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A fixed, seeded list of `num_batches` batches (the same on every rank and every call).

        split: "val" or "train". Eval transform unless `augment` (the training transform, and
        `mixup_fn` on each batch: the paper's setting for Hessian and landscape analyses).
        The last batch is smaller when the split has fewer images than asked for.
        """
        if split not in ("val", "train"):
            raise InputError(f"analysis split {split!r}: choose 'val' or 'train'")
        self.setup()
        base = self.train_set if split == "train" else self.val_set
        dataset = with_transform(base, self.transform(train=augment))
        batch_size = batch_size or self.batch_size
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(dataset), generator=gen)[: num_batches * batch_size].tolist()
        if not order:
            raise InputError(
                f"the {split} split is empty: no analysis batches; use data='val' / 'train' on a split "
                "that has images"
            )
        batches = []
        with seeded(seed):  # augmentations and mixup draw from the global RNGs: fixed, then restored
            for start in range(0, len(order), batch_size):
                items = [dataset[i] for i in order[start : start + batch_size]]
                images = torch.stack([x for x, _ in items])
                labels = torch.as_tensor([int(y) for _, y in items])
                if mixup_fn is not None and len(labels) % 2 == 0:
                    images, labels = mixup_fn(images, labels)
                batches.append((images, labels))
        return batches


def evaluation_sampler(dataset: Dataset) -> Sampler | None:
    """Under DDP, a sampler that gives each rank every world-th sample, each sample exactly once.

    Lightning's default `DistributedSampler` pads a set that does not divide by the number of
    ranks with repeated samples, which the validation metrics would count twice. Ranks may then run
    one batch fewer; evaluation has no per-batch collective (metrics sync once, at epoch end), so
    that is safe. Returns None in a single process (the loader then reads in order).
    Raises `InputError` when the set has fewer samples than there are ranks.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    world = dist.get_world_size()
    if len(dataset) < world:
        raise InputError(
            f"the evaluation set has {len(dataset)} samples for {world} processes: every process needs one; "
            "use a larger validation set or fewer devices"
        )
    return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=dist.get_rank(), shuffle=False)


class _Retransformed(Dataset):
    """A view of a dataset with another transform (the dataset must expose `transform`)."""

    def __init__(self, dataset: Dataset, transform: Callable) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset.raw(index)
        return self.transform(image), label


def with_transform(dataset: Dataset, transform: Callable) -> Dataset:
    """The same images under another transform; datasets offer `raw(i) -> (PIL image, label)`."""
    if not hasattr(dataset, "raw"):
        raise TypeError(f"{type(dataset).__name__} has no raw(i) accessor; cannot re-transform it")
    return _Retransformed(dataset, transform)
