"""The CPU scale's data: a deterministic image set with natural-image statistics and two cues.

Every image is a 1/f ("pink") background, like photographs' amplitude spectra, plus a class's
*shape* (a soft-edged silhouette brighter than the background, like a lit object: disk, ring, square,
cross or triangle; low frequencies, random place, size and tint) and a class's *texture* (oriented
1/f noise: a random field whose spectrum falls as 1/f between 0.2 and 0.9 pi, like the background's,
but only inside a narrow wedge of orientations around the texture's angle; random phases and
contrast). A class is one (shape, texture) pair, so neither cue alone names it: classes with the same
shape are told apart only by texture, and classes with the same texture only by shape. Training
labels can be flipped at random (`label_noise`) so the training loss stays away from zero. Generated
in numpy/torch in a few seconds for 10,000 images; identical for identical seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from alternet_pl.data.arrays import ArrayImageDataset
from alternet_pl.data.base import ImageDataModule
from alternet_pl.errors import InputError

__all__ = [
    "NATURAL_CORRUPTIONS",
    "SHAPES",
    "NaturalDataModule",
    "make_natural",
    "pink_noise",
    "write_natural_corruptions",
]

#: the silhouettes, in class order (class = shape_index * num_textures + texture_index)
SHAPES = ("disk", "ring", "square", "cross", "triangle")
#: the corruptions `write_natural_corruptions` writes (CIFAR-C layout)
NATURAL_CORRUPTIONS = ("gaussian_noise", "defocus_blur", "contrast", "pink_noise")


def pink_noise(shape: tuple[int, ...], rng: np.random.Generator, exponent: float = 1.0) -> np.ndarray:
    """Real float32 fields of `shape` (..., S, S) whose amplitude spectrum falls as 1/f**exponent (no
    DC), each scaled to unit standard deviation (drawn with torch, seeded from `rng`: fast)."""
    size = shape[-1]
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    freq = torch.fft.fftfreq(size)
    radius = torch.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    radius[0, 0] = float("inf")  # no DC
    spectrum = torch.randn((*shape, 2), generator=gen)
    spectrum = torch.view_as_complex(spectrum) * radius**-exponent
    field = torch.fft.ifft2(spectrum).real
    return (field / field.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)).numpy()


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Distance-like field, negative inside the silhouette of radius `r` centred at dx = dy = 0."""
    if shape == "disk":
        return np.hypot(dx, dy) - r
    if shape == "ring":
        return np.abs(np.hypot(dx, dy) - 0.7 * r) - 0.3 * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - 0.8 * r
    if shape == "cross":
        bar_h = np.maximum(np.abs(dx) - r, np.abs(dy) - 0.3 * r)
        bar_v = np.maximum(np.abs(dy) - r, np.abs(dx) - 0.3 * r)
        return np.minimum(bar_h, bar_v)
    # triangle pointing up (symmetric under a horizontal flip)
    return np.maximum(dy - 0.6 * r, 0.866 * np.abs(dx) - 0.5 * dy - 0.5 * r)


#: silhouettes: peak brightness above the background (in [0, 1] pixel units) and the range of each
#: channel's tint (1 = white)
SHAPE_STRENGTH = 0.6
SHAPE_TINT = (0.85, 1.0)
#: oriented textures: radial band (units of pi) and the angular half-width (standard deviation) of the wedge
TEXTURE_BAND = (0.2, 0.9)
TEXTURE_WEDGE_DEG = 12.0


def _shapes(
    shape_idx: np.ndarray, num_shapes: int, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(N, 3, size, size): each image's shape, soft-edged (low frequencies), brighter than the background
    in a random tint (a fixed polarity: a figure on its ground, which small models learn in a few hundred
    steps; random-sign colours were not learnt in 300)."""
    num_samples, size = len(shape_idx), xx.shape[0]
    centre = size / 2 + rng.uniform(-size / 8, size / 8, (num_samples, 2))
    radius = size * rng.uniform(0.25, 0.34, num_samples)
    mask = np.empty((num_samples, size, size), np.float32)
    for k, name in enumerate(SHAPES[:num_shapes]):
        sel = shape_idx == k
        dx = xx[None] - centre[sel, 1, None, None].astype(np.float32)
        dy = yy[None] - centre[sel, 0, None, None].astype(np.float32)
        dist = _signed_distance(name, dx, dy, radius[sel, None, None].astype(np.float32))
        mask[sel] = 1.0 / (1.0 + np.exp(np.clip(dist / 1.2, -40, 40)))  # soft edge: low frequencies
    tint = rng.uniform(*SHAPE_TINT, (num_samples, 3))  # brighter than the background in every channel
    strength = (SHAPE_STRENGTH * rng.uniform(0.7, 1.0, (num_samples, 1)) * tint).astype(np.float32)
    return strength[:, :, None, None] * mask[:, None]


def _textures(texture_idx: np.ndarray, num_textures: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 1, size, size): each image's texture, oriented 1/f noise: complex Gaussian Fourier
    coefficients times 1/f inside `TEXTURE_BAND` times a Gaussian wedge of orientations
    (`TEXTURE_WEDGE_DEG`) around the texture's angle (evenly over 180 degrees, jittered by 3 degrees),
    scaled to a contrast of 0.14-0.20 standard deviations: structure at every scale of the band, as
    natural textures have (the old single grating had one frequency)."""
    num_samples = len(texture_idx)
    jitter = rng.normal(0, np.pi / 60, num_samples)
    angle = texture_idx * np.pi / num_textures + jitter
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    freq = torch.fft.fftfreq(size) * 2  # units of pi
    fy, fx = freq[:, None], freq[None, :]
    radius = torch.sqrt(fx**2 + fy**2)
    lo, hi = TEXTURE_BAND
    band = ((radius >= lo) & (radius <= hi)).float() / radius.clamp_min(1e-6)
    # orientation of a frequency, folded to (-pi/2, pi/2] around the texture's angle
    offset = torch.atan2(fy, fx)[None] - torch.from_numpy(angle).float()[:, None, None]
    offset = torch.remainder(offset + np.pi / 2, np.pi) - np.pi / 2
    wedge = torch.exp(-0.5 * (offset / np.deg2rad(TEXTURE_WEDGE_DEG)) ** 2)
    coeffs = torch.view_as_complex(torch.randn((num_samples, size, size, 2), generator=gen))
    field = torch.fft.ifft2(coeffs * wedge * band).real
    field = field / field.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    contrast = torch.from_numpy(rng.uniform(0.14, 0.20, (num_samples, 1, 1))).float()
    return (field * contrast).numpy()[:, None]


def make_natural(
    num_samples: int,
    num_shapes: int = 5,
    num_textures: int = 4,
    size: int = 32,
    seed: int = 0,
    label_noise: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return uint8 images (N, size, size, 3) and int64 labels (N,) of `num_shapes * num_textures`
    balanced classes; `label_noise` is the fraction of labels replaced by a uniformly drawn class.

    Raises:
        InputError: a count out of range.
    """
    if not 1 <= num_shapes <= len(SHAPES) or num_textures < 1 or num_shapes * num_textures < 2:
        raise InputError(
            f"num_shapes={num_shapes}, num_textures={num_textures}: use 1..{len(SHAPES)} shapes, at least "
            "one texture and at least 2 classes in all"
        )
    if not 0.0 <= label_noise < 1.0 or num_samples < 1 or size < 8:
        raise InputError(
            f"label_noise={label_noise}, num_samples={num_samples}, size={size}: use label_noise in [0, 1), "
            "at least one sample and size >= 8"
        )
    rng = np.random.default_rng(seed)
    num_classes = num_shapes * num_textures
    labels = rng.permutation(np.arange(num_samples) % num_classes)
    shape_idx, texture_idx = labels // num_textures, labels % num_textures
    grid = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(grid, grid, indexing="ij")

    background = pink_noise((num_samples, 1, size, size), rng)
    tint = (1.0 + 0.25 * rng.uniform(-1, 1, (num_samples, 3, 1, 1))).astype(np.float32)
    images = 0.5 + 0.12 * tint * background  # coloured 1/f background

    images += _shapes(shape_idx, num_shapes, xx, yy, rng)  # low frequencies: the shape cue
    images += _textures(texture_idx, num_textures, size, rng)  # high frequencies: the texture cue
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    images += 0.02 * torch.randn(images.shape, generator=gen).numpy()

    if label_noise > 0:
        flip = rng.random(num_samples) < label_noise
        labels = np.where(flip, rng.integers(0, num_classes, num_samples), labels)
    array = (np.clip(images, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(array), labels.astype(np.int64)


def _box_blur(x: np.ndarray, r: int) -> np.ndarray:
    """The (2r+1)^2 circular box mean of (N, H, W, C) images, as two 1-d passes (the box is separable)."""
    rows = np.zeros_like(x)
    for d in range(-r, r + 1):
        rows += np.roll(x, d, axis=2)
    out = np.zeros_like(x)
    for d in range(-r, r + 1):
        out += np.roll(rows, d, axis=1)
    return out / (2 * r + 1) ** 2


def write_natural_corruptions(
    root: str | Path, num_images: int = 2000, seed: int = 2_000_003, **kwargs
) -> Path:
    """A CIFAR-C-layout set of the natural images (`<corruption>.npy` of 5 severities + `labels.npy`):
    Gaussian noise (high frequencies), a box blur (removes the texture cue), contrast (both cues) and
    added 1/f noise (low frequencies, what a shape-reading model suffers from). Returns `root`."""
    root = Path(root)
    images, labels = make_natural(num_images, seed=seed, **kwargs)
    x = images.astype(np.float64) / 255.0
    rng = np.random.default_rng(seed)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    severity = {
        "gaussian_noise": lambda s: x + rng.normal(0, (0.03, 0.06, 0.09, 0.13, 0.18)[s - 1], x.shape),
        "defocus_blur": lambda s: _box_blur(x, s),
        "contrast": lambda s: (x - mean) * (0.7, 0.5, 0.35, 0.25, 0.15)[s - 1] + mean,
        "pink_noise": lambda s: (
            x
            + (0.04, 0.08, 0.12, 0.17, 0.23)[s - 1]
            * pink_noise((len(x), 1, x.shape[1], x.shape[2]), rng).transpose(0, 2, 3, 1)
        ),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name in NATURAL_CORRUPTIONS:
        stack = np.concatenate([severity[name](s) for s in range(1, 6)])
        np.save(root / f"{name}.npy", (np.clip(stack, 0, 1) * 255).round().astype(np.uint8))
    np.save(root / "labels.npy", np.tile(labels, 5))
    return root


class NaturalDataModule(ImageDataModule):
    """`make_natural` images in memory: `num_shapes * num_textures` classes; label noise on the
    training split only (validation labels are clean). No horizontal flip by default: the textures'
    orientations are part of the class. No random crop by default (`crop_padding=0`): the silhouettes'
    places are already random, and a zero-padded crop's black borders are a third cue that a
    300-step model spends its steps on."""

    mean = (0.5, 0.5, 0.5)
    std = (0.2, 0.2, 0.2)

    def __init__(
        self,
        num_train: int = 6000,
        num_val: int = 2000,
        num_shapes: int = 5,
        num_textures: int = 4,
        label_noise: float = 0.1,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        auto_augment: str | None = None,
        hflip: float = 0.0,
        drop_last: bool = False,
        crop_padding: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, auto_augment, 0.0, hflip, drop_last)
        if crop_padding < 0:
            raise InputError(f"crop_padding={crop_padding}: use 0 (no random crop) or a padding in pixels")
        self.crop_padding = crop_padding
        make_natural(1, num_shapes, num_textures, label_noise=label_noise)  # validates the counts
        self.num_train, self.num_val, self.label_noise, self.seed = num_train, num_val, label_noise, seed
        self.num_shapes, self.num_textures = num_shapes, num_textures
        self.num_classes = num_shapes * num_textures

    def build_datasets(self, train_transform, eval_transform):
        shared = dict(num_shapes=self.num_shapes, num_textures=self.num_textures, size=self.image_size)
        train = make_natural(self.num_train, seed=self.seed, label_noise=self.label_noise, **shared)
        val = make_natural(self.num_val, seed=self.seed + 1_000_003, **shared)
        return ArrayImageDataset(*train, train_transform), ArrayImageDataset(*val, eval_transform)
