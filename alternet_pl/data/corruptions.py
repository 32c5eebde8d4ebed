"""Common-corruption test sets: CIFAR-10-C / CIFAR-100-C arrays and the ImageNet-C folder layout.

CIFAR-C (Hendrycks & Dietterich 2019): ``<root>/<corruption>.npy`` of shape (5 n, 32, 32, 3) uint8
(n = 10000 in the release), severity 1 first, and ``<root>/labels.npy`` with 5 n labels. Files of
any n load the same way, so tests can write tiny ones. ImageNet-C:
``<root>/<corruption>/<severity>/<class>/<image>`` (classes sorted as in ImageFolder).
The layout is checked up front; a missing file or a label count mismatch names the file to fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from alternet_pl.errors import InputError, MissingInputError

__all__ = [
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "CorruptionArrayDataset",
    "CorruptionDataModule",
    "corruption_dataset",
    "detect_layout",
]

#: the 15 benchmark corruptions (mCE is defined over these).
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
#: the 4 held-out corruptions shipped with CIFAR-C / ImageNet-C.
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES = (1, 2, 3, 4, 5)


def detect_layout(root: str | Path) -> str:
    """ "npy" when ``labels.npy`` is present (CIFAR-C), "folder" when sub-folders are (ImageNet-C)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(
            f"corruption data folder {root} does not exist: download CIFAR-10-C / CIFAR-100-C "
            "(zenodo.org/record/2535967, 3555552) or ImageNet-C and pass its folder as `root`"
        )
    if (root / "labels.npy").is_file():
        return "npy"
    if any(p.is_dir() for p in root.iterdir()):
        return "folder"
    raise MissingInputError(
        f"{root} is neither CIFAR-C (labels.npy + <corruption>.npy) nor ImageNet-C "
        "(<corruption>/<severity>/<class>/<image>); expected file: labels.npy"
    )


def _check_severity(severity: int) -> None:
    if severity not in SEVERITIES:
        raise InputError(f"severity {severity} is not one of {SEVERITIES}")


class CorruptionArrayDataset(Dataset):
    """One (corruption, severity) of a CIFAR-C folder: normalised float (3, H, W) images, int labels."""

    def __init__(
        self,
        root: str | Path,
        corruption: str,
        severity: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        _check_severity(severity)
        root = Path(root)
        file, labels_file = root / f"{corruption}.npy", root / "labels.npy"
        for f in (file, labels_file):
            if not f.is_file():
                raise MissingInputError(
                    f"missing {f}: CIFAR-C needs <corruption>.npy per corruption and labels.npy; "
                    f"download it, or drop {corruption!r} from `corruptions`"
                )
        images = np.load(file, mmap_mode="r")
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or images.shape[0] % 5:
            raise InputError(
                f"{file}: expected uint8 (5 n, H, W, 3) with the 5 severities stacked, got "
                f"{images.dtype} {images.shape}; re-download the file"
            )
        labels = np.load(labels_file, mmap_mode="r")
        if labels.shape != (images.shape[0],):
            raise InputError(
                f"label count mismatch: {labels_file} holds {labels.shape} labels but {file} holds "
                f"{images.shape[0]} images; expected labels.npy of shape ({images.shape[0]},) "
                "from the same release"
            )
        n = images.shape[0] // 5
        sl = slice((severity - 1) * n, severity * n)
        self.images = images[sl]
        self.labels = torch.tensor(np.asarray(labels[sl]), dtype=torch.int64)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1).float() / 255.0
        return (x - self.mean) / self.std, int(self.labels[i])


def _folder_dataset(root: Path, corruption: str, severity: int, mean, std, image_size: int) -> Dataset:
    from torchvision import datasets, transforms

    _check_severity(severity)
    folder = root / corruption / str(severity)
    if not folder.is_dir():
        raise MissingInputError(
            f"missing {folder}: ImageNet-C needs <corruption>/<severity>/<class>/<image>; "
            f"download it, or drop {corruption!r} from `corruptions`"
        )
    tf = transforms.Compose(
        [
            transforms.Resize(int(round(image_size / 0.875))),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    return datasets.ImageFolder(str(folder), transform=tf)


def corruption_dataset(
    root: str | Path,
    corruption: str,
    severity: int,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int = 224,
    max_images: int | None = None,
) -> Dataset:
    """The (corruption, severity) test set in either layout, optionally its first ``max_images``."""
    root = Path(root)
    if detect_layout(root) == "npy":
        ds = CorruptionArrayDataset(root, corruption, severity, mean, std)
    else:
        ds = _folder_dataset(root, corruption, severity, mean, std, image_size)
    if max_images is not None and max_images < len(ds):
        ds = Subset(ds, range(max_images))
    return ds


class CorruptionDataModule(pl.LightningDataModule):
    """All (corruption, severity) test sets of one folder; `test_dataloader()` lists them in `keys` order.

    Args:
        root: CIFAR-C folder (``labels.npy`` + ``<corruption>.npy``) or ImageNet-C root.
        corruptions: names to evaluate (default: the 15 benchmark corruptions).
        severities: subset of 1..5.
        mean, std: the normalisation the model was trained with (per data set).
        max_images: evaluate only the first images of each severity (quick runs).
        image_size: ImageNet-C centre-crop size (resize to size / 0.875 first).
    """

    def __init__(
        self,
        root: str | Path,
        mean: Sequence[float],
        std: Sequence[float],
        corruptions: Sequence[str] | None = None,
        severities: Sequence[int] = SEVERITIES,
        batch_size: int = 256,
        num_workers: int = 0,
        max_images: int | None = None,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.mean, self.std = tuple(mean), tuple(std)
        self.corruptions = tuple(corruptions) if corruptions is not None else CORRUPTIONS
        self.severities = tuple(severities)
        for s in self.severities:
            _check_severity(s)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.max_images, self.image_size = max_images, image_size
        self.datasets: dict[tuple[str, int], Dataset] = {}

    @property
    def keys(self) -> list[tuple[str, int]]:
        return [(c, s) for c in self.corruptions for s in self.severities]

    def setup(self, stage: str | None = None) -> None:
        layout = detect_layout(self.root)
        if layout == "npy":  # report every missing file at once
            missing = [c for c in self.corruptions if not (self.root / f"{c}.npy").is_file()]
            if missing:
                present = sorted(p.stem for p in self.root.glob("*.npy"))
                raise MissingInputError(
                    f"{self.root} lacks {[f'{c}.npy' for c in missing]}; download the full set or "
                    f"pass corruptions= without them (present: {present})"
                )
        self.datasets = {
            (c, s): corruption_dataset(self.root, c, s, self.mean, self.std, self.image_size, self.max_images)
            for c, s in self.keys
        }

    def loader(self, corruption: str, severity: int) -> DataLoader:
        if not self.datasets:
            self.setup()
        return DataLoader(
            self.datasets[(corruption, severity)],
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
        )

    def test_dataloader(self) -> list[DataLoader]:
        return [self.loader(c, s) for c, s in self.keys]
