"""ImageFolder / ImageNet: `<root>/train/<class>/*.JPEG` and `<root>/val/<class>/*.JPEG`."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader

from alternet_pl.data.base import ImageDataModule
from alternet_pl.errors import InputError, MissingInputError


def load_image(path: str) -> Image.Image:
    """Decode an image as RGB; a file that does not decode raises `InputError` naming it."""
    try:
        return default_loader(path)
    except (OSError, SyntaxError, ValueError) as err:  # PIL: UnidentifiedImageError, truncated files
        raise InputError(
            f"image {path} cannot be decoded ({err}); replace it with a valid image or delete it "
            "(every file under <root>/<split>/<class>/ is read as an image)"
        ) from None


class _Folder(ImageFolder):
    def __init__(self, root: str, transform=None) -> None:
        super().__init__(root, transform=transform, loader=load_image)

    def raw(self, index: int):
        path, label = self.samples[index]
        return self.loader(path), label


def _open_split(root: Path, split: str, transform) -> _Folder:
    folder = root / split
    if not folder.is_dir():
        raise MissingInputError(
            f"image folder {folder} not found; expected {root}/train/<class>/<image> and "
            f"{root}/val/<class>/<image> (for ImageNet, move the validation images into class folders)"
        )
    try:
        dataset = _Folder(str(folder), transform=transform)
    except FileNotFoundError as err:
        raise MissingInputError(f"no images found under {folder}: {err}") from err
    if len(dataset.classes) < 2:
        raise InputError(
            f"{folder} has {len(dataset.classes)} class folder(s) {dataset.classes}; classification needs "
            "at least 2 (one sub-folder per class)"
        )
    return dataset


class ImageFolderDataModule(ImageDataModule):
    """Any train/val ImageFolder; with the defaults, the paper's ImageNet recipe (224 px)."""

    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    transform_style = "imagenet"

    def __init__(
        self,
        root: str = "data/imagenet",
        image_size: int = 224,
        batch_size: int = 128,
        num_workers: int = 8,
        auto_augment: str | None = "rand-m9-n2-mstd0.5",
        re_prob: float = 0.25,
        hflip: float = 0.5,
        drop_last: bool = True,
        pin_memory: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, auto_augment, re_prob, hflip, drop_last, pin_memory)
        self.root = Path(root)
        self.image_size = image_size
        self._num_classes: int | None = None

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        if self._num_classes is None:
            self._num_classes = len(_open_split(self.root, "train", None).classes)
        return self._num_classes

    def prepare_data(self) -> None:
        _open_split(self.root, "train", None)
        _open_split(self.root, "val", None)

    def build_datasets(self, train_transform, eval_transform):
        train = _open_split(self.root, "train", train_transform)
        val = _open_split(self.root, "val", eval_transform)
        if train.classes != val.classes:
            raise InputError(
                f"train and val class folders differ under {self.root}: "
                f"{sorted(set(train.classes) ^ set(val.classes))[:10]}"
            )
        self._num_classes = len(train.classes)
        return train, val


class ImageNetDataModule(ImageFolderDataModule):
    """ImageNet-1k in the ImageFolder layout (the paper's recipe is the default)."""
