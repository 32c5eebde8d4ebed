"""The CPU scale's data set (alternet_pl.data.natural) and models (experiments/cpu/)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import yaml

import alternet_pl.models  # noqa: F401  (registers the models)
from alternet_pl.data.natural import (
    NATURAL_CORRUPTIONS,
    TEXTURE_BAND,
    _box_blur,
    _textures,
    make_natural,
    pink_noise,
    write_natural_corruptions,
)
from alternet_pl.errors import InputError


def test_deterministic_balanced_and_label_noise_as_asked():
    a, la = make_natural(400, seed=3)
    b, lb = make_natural(400, seed=3)
    assert a.dtype == np.uint8 and a.shape == (400, 32, 32, 3)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, make_natural(400, seed=4)[0])
    assert np.bincount(la, minlength=20).tolist() == [20] * 20
    _, noisy = make_natural(4000, seed=3, label_noise=0.3)
    clean = make_natural(4000, seed=3)[1]
    changed = np.mean(noisy != clean)  # a flipped label lands on its own class 1 time in 20
    assert 0.3 * 19 / 20 - 0.03 < changed < 0.3 * 19 / 20 + 0.03


def test_pink_noise_has_a_one_over_f_amplitude_spectrum():
    field = pink_noise((256, 1, 64, 64), np.random.default_rng(0))
    amp = np.abs(np.fft.fft2(field[:, 0])).mean(0)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij"))
    sel = (f > 0.02) & (f < 0.45)
    slope = np.polyfit(np.log(f[sel]), np.log(amp[sel]), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.05)


def test_images_spectrum_falls_like_natural_images():
    images, _ = make_natural(300, seed=0)
    gray = images.mean(-1) / 255.0
    amp = np.abs(np.fft.fft2(gray - gray.mean((1, 2), keepdims=True))).mean(0)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32), indexing="ij"))
    low, mid = amp[(f > 0.03) & (f < 0.08)].mean(), amp[(f > 0.15) & (f < 0.3)].mean()
    assert low > 2.5 * mid  # falls with frequency


def test_textures_are_oriented_one_over_f_noise():
    """Texture t: its energy peaks at the orientation t * 45 degrees, and inside its wedge the amplitude
    falls as 1/f over the band (a hand-rolled periodogram of the texture fields alone)."""
    size, n = 32, 400
    idx = np.arange(n) % 4
    fields = _textures(idx, 4, size, np.random.default_rng(0))[:, 0]
    power = np.abs(np.fft.fft2(fields)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(size) * 2, np.fft.fftfreq(size) * 2, indexing="ij")
    radius, theta = np.hypot(fx, fy), np.mod(np.arctan2(fy, fx), np.pi)
    in_band = (radius > TEXTURE_BAND[0] + 0.05) & (radius < TEXTURE_BAND[1] - 0.05)
    assert power[:, radius > TEXTURE_BAND[1] + 0.1].sum() < 1e-6 * power.sum()  # nothing outside the band
    for t in range(4):
        mean = power[idx == t].mean(0)
        # 4 orientation bins centred on 0, 45, 90 and 135 degrees
        bins = np.floor(np.mod(theta + np.pi / 8, np.pi) / (np.pi / 4)).astype(int)
        energy = [mean[in_band & (bins == b)].sum() for b in range(4)]
        assert int(np.argmax(energy)) == t
        target = t * np.pi / 4
        near = in_band & (np.abs(np.mod(theta - target + np.pi / 2, np.pi) - np.pi / 2) < np.deg2rad(6))
        slope = np.polyfit(np.log(radius[near]), np.log(np.sqrt(mean[near])), 1)[0]
        assert slope == pytest.approx(-1.0, abs=0.25)


def test_cues_are_not_redundant():
    """A class's texture is its index mod 4: every class's high-frequency power pattern matches the
    mean pattern of its own texture best, whatever its shape (so same-shape classes differ by texture)."""
    images, labels = make_natural(2000, seed=1)
    gray = images.mean(-1) / 255.0
    spec = np.abs(np.fft.fft2(gray - gray.mean((1, 2), keepdims=True))) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32), indexing="ij"))
    high = (f > 0.25).ravel()
    pattern = spec.reshape(len(spec), -1)[:, high]
    by_texture = np.stack([pattern[labels % 4 == t].mean(0) for t in range(4)])
    for c in range(20):
        mine = pattern[labels == c].mean(0)
        corr = [np.corrcoef(mine, t)[0, 1] for t in by_texture]
        assert int(np.argmax(corr)) == c % 4


def test_bad_counts_are_one_clear_error():
    with pytest.raises(InputError, match="num_shapes"):
        make_natural(10, num_shapes=9)
    with pytest.raises(InputError, match="label_noise"):
        make_natural(10, label_noise=1.5)


def test_corrupted_set_layout(tmp_path):
    root = write_natural_corruptions(tmp_path / "C", num_images=20)
    labels = np.load(root / "labels.npy")
    assert labels.shape == (100,)
    for name in NATURAL_CORRUPTIONS:
        stack = np.load(root / f"{name}.npy")
        assert stack.shape == (100, 32, 32, 3) and stack.dtype == np.uint8
        clean = make_natural(20, seed=2_000_003)[0].astype(float)
        err = [np.abs(stack[20 * s : 20 * (s + 1)] - clean).mean() for s in range(5)]
        assert err[0] < err[-1], name  # harder with the severity


def test_box_blur_is_the_circular_window_mean():
    """`_box_blur` (two 1-d passes) against the (2r+1)^2 window written out with wrapped indices."""
    x = np.random.default_rng(0).random((2, 7, 9, 3))
    for r in (1, 3):
        idx_y = (np.arange(7)[:, None] + np.arange(-r, r + 1)[None]) % 7
        idx_x = (np.arange(9)[:, None] + np.arange(-r, r + 1)[None]) % 9
        brute = np.empty_like(x)
        for i in range(7):
            for j in range(9):
                brute[:, i, j] = x[:, idx_y[i]][:, :, idx_x[j]].mean(axis=(1, 2))
        np.testing.assert_allclose(_box_blur(x, r), brute, rtol=1e-12, atol=1e-12)


def _cpu_model(name: str, **override):
    with open(f"experiments/cpu/{name}.yaml") as fh:
        cfg = yaml.safe_load(fh)["model"]["network"]
    return timm.create_model(cfg["name"], num_classes=20, **dict(cfg.get("kwargs") or {}, **override))


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_cpu_models_keep_the_papers_capacity_order():
    resnet, alternet = _count(_cpu_model("resnet")), _count(_cpu_model("alternet"))
    step1 = _count(_cpu_model("alternet", layout=["CC", "CCC", "CCM"]))
    assert resnet < step1 < alternet  # the build-up grows as MSAs replace Conv blocks
    assert (resnet, step1, alternet) == (80484, 88789, 90918)


def test_natural_module_trains_without_a_random_crop_unless_asked():
    """The natural set's training transform has no zero-padded random crop by default (its black
    borders were a cue the 300-step models learnt instead of the shapes); `crop_padding` adds one."""
    import torchvision.transforms as T

    from alternet_pl.data.natural import NaturalDataModule

    def crops(module):
        return [t for t in module.transform(train=True).transforms if isinstance(t, T.RandomCrop)]

    assert crops(NaturalDataModule()) == []
    (crop,) = crops(NaturalDataModule(crop_padding=4))
    assert crop.padding == 4
    with pytest.raises(InputError, match="crop_padding"):
        NaturalDataModule(crop_padding=-1)
