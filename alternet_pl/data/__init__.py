"""LightningDataModules: synthetic (default), CIFAR-10/100, ImageFolder/ImageNet, corruptions."""

from alternet_pl.data.base import ImageDataModule
from alternet_pl.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from alternet_pl.data.corruptions import CorruptionDataModule
from alternet_pl.data.imagefolder import ImageFolderDataModule, ImageNetDataModule
from alternet_pl.data.synthetic import SyntheticDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CorruptionDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
    "SyntheticDataModule",
]
