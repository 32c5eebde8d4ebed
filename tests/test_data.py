"""Data modules against hand-written files in the real on-disk layouts."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from alternet_pl.data import CIFAR10DataModule, CIFAR100DataModule, ImageFolderDataModule, SyntheticDataModule
from alternet_pl.data.cifar import load_cifar
from alternet_pl.data.synthetic import make_synthetic


def test_synthetic_is_byte_identical_for_a_seed_and_differs_for_another():
    a_img, a_lab = make_synthetic(64, seed=3)
    b_img, b_lab = make_synthetic(64, seed=3)
    c_img, _ = make_synthetic(64, seed=4)
    assert a_img.tobytes() == b_img.tobytes() and a_lab.tobytes() == b_lab.tobytes()
    assert a_img.tobytes() != c_img.tobytes()
    assert a_img.shape == (64, 32, 32, 3) and a_img.dtype == np.uint8
    assert set(a_lab.tolist()) == set(range(10))


def test_synthetic_classes_carry_low_and_high_frequency_cues():
    images, labels = make_synthetic(400, seed=0)
    x = images.astype(np.float64).mean(-1)
    power = np.abs(np.fft.fftshift(np.fft.fft2(x - x.mean((1, 2), keepdims=True)), axes=(1, 2))) ** 2
    yy, xx = np.meshgrid(np.arange(32) - 16, np.arange(32) - 16, indexing="ij")
    radius = np.hypot(yy, xx)

    def excess(lo, hi):  # share of the power in a ring over the ring's share of the area (white noise: 1)
        ring = (radius >= lo) & (radius <= hi)
        return power[:, ring].sum() / power.sum() / ring.mean()

    assert excess(0.5, 3) > 3  # shapes: 1-2 cycles per image
    assert excess(7, 13) > 1.5  # textures: 8-12 cycles per image
    assert excess(4, 6) < 0.5  # nothing in between but noise
    # class means differ: a nearest-class-mean classifier on raw pixels beats chance clearly
    means = np.stack([x[labels == c].mean(0) for c in range(10)])
    pred = ((x[:, None] - means[None]) ** 2).sum((2, 3)).argmin(1)
    assert (pred == labels).mean() > 0.3


def _write_cifar(root, name, n_train=6, n_test=4, num_classes=10, drop_key=None):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, label_key = root / "cifar-10-batches-py", b"labels"
        files = {f"data_batch_{i}": n_train for i in range(1, 6)} | {"test_batch": n_test}
    else:
        folder, label_key = root / "cifar-100-python", b"fine_labels"
        files = {"train": n_train, "test": n_test}
    folder.mkdir(parents=True)
    expected = {}
    for fname, n in files.items():
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, num_classes, n).tolist()
        entry = {b"data": data, label_key: labels, b"batch_label": b"x"}
        if name == "cifar100":
            entry[b"coarse_labels"] = [y // 5 for y in labels]
        if drop_key and fname == drop_key[0]:
            entry.pop(drop_key[1])
        with open(folder / fname, "wb") as fh:
            pickle.dump(entry, fh)
        expected[fname] = (data, labels)
    return expected


@pytest.mark.parametrize("name,num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loader_reads_the_real_pickle_layout(tmp_path, name, num_classes):
    expected = _write_cifar(tmp_path, name, num_classes=num_classes)
    test_file = "test_batch" if name == "cifar10" else "test"
    images, labels = load_cifar(tmp_path, name, train=False)
    data, labs = expected[test_file]
    # CIFAR rows are 1024 R, then 1024 G, then 1024 B values, each row-major 32x32
    assert np.array_equal(
        images[2, 5, 7], [data[2, 5 * 32 + 7], data[2, 1024 + 5 * 32 + 7], data[2, 2048 + 5 * 32 + 7]]
    )
    assert labels.tolist() == labs
    train_images, _ = load_cifar(tmp_path, name, train=True)
    assert len(train_images) == (30 if name == "cifar10" else 6)
    cls = CIFAR10DataModule if name == "cifar10" else CIFAR100DataModule
    dm = cls(root=str(tmp_path), batch_size=4, num_workers=0, auto_augment=None)
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.tolist() == labs[:4]


def test_cifar_missing_root_or_file_or_key_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-100-python.*not found.*download"):
        load_cifar(tmp_path, "cifar100", train=True)
    _write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3 is missing"):
        load_cifar(tmp_path, "cifar10", train=True)
    other = tmp_path / "other"
    _write_cifar(other, "cifar100", drop_key=("test", b"fine_labels"))
    with pytest.raises(ValueError, match="fine_labels"):
        load_cifar(other, "cifar100", train=False)


def _write_folder(root, classes, per_class=3, size=20):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png"
                )


def test_imagefolder_reads_tiny_pngs(tmp_path):
    _write_folder(tmp_path, ["ant", "bee", "cat"])
    dm = ImageFolderDataModule(
        root=str(tmp_path),
        image_size=16,
        batch_size=9,
        num_workers=0,
        auto_augment=None,
        re_prob=0.0,
        drop_last=False,
    )
    assert dm.num_classes == 3
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (9, 3, 16, 16)
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_imagefolder_bad_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        ImageFolderDataModule(root=str(tmp_path / "nothing")).prepare_data()
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataModule(root=str(tmp_path / "empty")).prepare_data()
    _write_folder(tmp_path / "one", ["only"])
    with pytest.raises(ValueError, match="at least 2"):
        ImageFolderDataModule(root=str(tmp_path / "one")).prepare_data()


def test_analysis_batches_are_fixed_and_leave_rng_alone():
    dm = SyntheticDataModule(num_train=50, num_val=30, batch_size=8, auto_augment="rand-m9-n2-mstd1.0")
    state = torch.get_rng_state()
    a = dm.analysis_batches("train", num_batches=2, augment=True, seed=5)
    assert torch.equal(state, torch.get_rng_state())
    b = dm.analysis_batches("train", num_batches=2, augment=True, seed=5)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    c = dm.analysis_batches("val", num_batches=5, batch_size=8, seed=0)
    assert [len(y) for _, y in c] == [8, 8, 8, 6]  # 30 images: the last batch is short


def test_cifar_normalisation_is_the_authors():
    """xxxnell/how-do-vits-work ops/datasets.py and configs/cifar{10,100}_*.yaml, written out here; the
    models' pretrained_cfg (used by timm's own transforms) carries the same CIFAR-100 values."""
    import timm

    from alternet_pl.data import CIFAR10DataModule, CIFAR100DataModule

    assert CIFAR10DataModule.mean == (0.4914, 0.4822, 0.4465)
    assert CIFAR10DataModule.std == (0.2023, 0.1994, 0.2010)
    assert CIFAR100DataModule.mean == (0.5071, 0.4867, 0.4408)
    assert CIFAR100DataModule.std == (0.2675, 0.2565, 0.2761)
    for name in ("alternet_cifar_50", "vit_cifar_ti"):
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        assert (tuple(cfg["mean"]), tuple(cfg["std"])) == (CIFAR100DataModule.mean, CIFAR100DataModule.std)
