"""CIFAR-10 / CIFAR-100 from the official python pickles (no download; the layout is checked)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from alternet_pl.data.arrays import ArrayImageDataset
from alternet_pl.data.base import ImageDataModule
from alternet_pl.errors import InputError, MissingInputError
from alternet_pl.models.alternet import CIFAR100_MEAN, CIFAR100_STD

_HOW_TO_GET = (
    "download and extract the official archive ({url}) into {root} "
    "(e.g. with torchvision.datasets.{cls}(root, download=True) on a machine with internet)"
)

# name -> (folder, train files, test files, label key, number of classes, archive url)
_LAYOUTS = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
        10,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "CIFAR10",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        b"fine_labels",
        100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "CIFAR100",
    ),
}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts, lists, bytes, numpy arrays) and nothing else: a file that
    asks for any other Python object is refused instead of run."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which CIFAR files never hold")
        return super().find_class(module, name)


def _load_pickle(path: Path, label_key: bytes, hint: str) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise MissingInputError(f"CIFAR file {path} is missing; {hint}")
    try:
        with open(path, "rb") as fh:
            entry = _ArraysOnly(fh, encoding="bytes").load()
    except Exception as err:
        raise InputError(f"CIFAR file {path} is not a readable CIFAR pickle ({err}); {hint}") from None
    if not isinstance(entry, dict):
        raise InputError(f"CIFAR file {path} holds a {type(entry).__name__}, not a dict; {hint}")
    for key in (b"data", label_key):
        if key not in entry:
            raise InputError(f"CIFAR file {path} has no key {key!r} (keys: {sorted(entry)}); {hint}")
    data = np.asarray(entry[b"data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise InputError(
            f"CIFAR file {path}: expected data (N, 3072) with N labels, got {data.shape} and "
            f"{len(labels)} labels; {hint}"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def load_cifar(root: str | Path, name: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR split as uint8 (N, 32, 32, 3) images and int64 labels."""
    folder, train_files, test_files, label_key, num_classes, url, cls = _LAYOUTS[name]
    root = Path(root)
    hint = _HOW_TO_GET.format(url=url, root=root, cls=cls)
    base = root / folder
    if not base.is_dir():
        raise MissingInputError(f"{name}: folder {base} not found; {hint}")
    parts = [_load_pickle(base / f, label_key, hint) for f in (train_files if train else test_files)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.min() < 0 or labels.max() >= num_classes:
        raise InputError(f"{name}: labels outside 0..{num_classes - 1} in {base}; {hint}")
    return images, labels


# Input normalisation as the authors' (xxxnell/how-do-vits-work: ops/datasets.py get_cifar10 / get_cifar100
# defaults, configs/cifar{10,100}_*.yaml `dataset.mean` / `dataset.std`), so their checkpoints see the
# inputs they were trained on. CIFAR-10's std is the widely copied (0.2023, 0.1994, 0.2010), not the
# per-pixel std of the training set (0.2470, 0.2435, 0.2616): theirs is kept for comparability. CIFAR-100's
# are the models' default_cfg's (`alternet_pl.models.alternet`, importable without Lightning), imported here.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 from `<root>/cifar-10-batches-py/` (the official python version)."""

    dataset_name = "cifar10"
    num_classes = 10
    mean = CIFAR10_MEAN
    std = CIFAR10_STD

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 96,
        num_workers: int = 4,
        auto_augment: str | None = "rand-m9-n2-mstd1.0",
        re_prob: float = 0.0,
        hflip: float = 0.5,
        drop_last: bool = False,
        pin_memory: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, auto_augment, re_prob, hflip, drop_last, pin_memory)
        self.root = root

    def prepare_data(self) -> None:
        load_cifar(self.root, self.dataset_name, train=False)  # fail early with a clear message

    def build_datasets(self, train_transform, eval_transform):
        train = load_cifar(self.root, self.dataset_name, train=True)
        val = load_cifar(self.root, self.dataset_name, train=False)
        return ArrayImageDataset(*train, train_transform), ArrayImageDataset(*val, eval_transform)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (fine labels) from `<root>/cifar-100-python/`."""

    dataset_name = "cifar100"
    num_classes = 100
    mean = CIFAR100_MEAN
    std = CIFAR100_STD
