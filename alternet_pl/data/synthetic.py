"""The default data: a deterministic, seeded, in-memory image set with shape AND texture cues.

Each class has a low-frequency *shape* (a smooth random field, randomly shifted per image) and a
high-frequency *texture* (an oriented grating with a class-specific spatial frequency, random
phase). Each cue is dropped independently for some images, so a model must use both: the
low-pass (MSA) and high-pass (Conv) analyses then have something to find. No download.
"""

from __future__ import annotations

import numpy as np
import torch

from alternet_pl.data.arrays import ArrayImageDataset
from alternet_pl.data.base import ImageDataModule
from alternet_pl.errors import InputError


def _class_cues(num_classes: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class shape templates (C, 3, S, S) and grating frequencies (C, 2) in cycles per image."""
    coords = torch.arange(size, dtype=torch.float64) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    shapes = torch.zeros(num_classes, 3, size, size, dtype=torch.float64)
    for c in range(num_classes):
        field = torch.zeros(size, size, dtype=torch.float64)
        for _ in range(4):  # a few low-frequency cosines: 1..2 cycles per image
            ky, kx = torch.randint(0, 3, (2,), generator=gen).tolist()
            phase = float(torch.rand(1, generator=gen)) * 2 * np.pi
            field += torch.cos(2 * np.pi * (ky * yy + kx * xx) + phase)
        field = field / field.abs().max().clamp_min(1e-9)
        colour = torch.rand(3, generator=gen, dtype=torch.float64) * 2 - 1
        shapes[c] = colour[:, None, None] * field
    angles = torch.arange(num_classes, dtype=torch.float64) * np.pi / num_classes
    radius = size / 4 + (torch.arange(num_classes) % 3).double() * size / 16  # 8..12 cycles at 32 px
    freqs = torch.stack([radius * torch.sin(angles), radius * torch.cos(angles)], dim=1)
    return shapes, freqs


def make_synthetic(
    num_samples: int,
    num_classes: int = 10,
    size: int = 32,
    seed: int = 0,
    class_seed: int = 1234,
    noise: float = 0.08,
    drop_cue: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Return uint8 images (N, size, size, 3) and int64 labels (N,), identical for identical seeds.

    `class_seed` fixes the classes' cues (shared by train and validation splits); `seed` draws the
    images (positions, phases, contrasts, noise).
    """
    shapes, freqs = _class_cues(num_classes, size, torch.Generator().manual_seed(class_seed))
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=gen)]
    coords = torch.arange(size, dtype=torch.float64) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    shifts = torch.randint(-size // 8, size // 8 + 1, (num_samples, 2), generator=gen)
    phases = torch.rand(num_samples, generator=gen, dtype=torch.float64) * 2 * np.pi
    contrast = 0.6 + 0.4 * torch.rand(num_samples, 2, generator=gen, dtype=torch.float64)
    dropped = torch.rand(num_samples, generator=gen) < drop_cue
    which = torch.randint(0, 2, (num_samples,), generator=gen)  # which cue a dropped image loses
    pixel_noise = torch.randn(num_samples, 3, size, size, generator=gen, dtype=torch.float64) * noise
    idx = torch.arange(size)
    rows = (idx[None, :] - shifts[:, :1]) % size  # torch.roll by the shift, vectorised
    cols = (idx[None, :] - shifts[:, 1:]) % size
    shape = shapes[labels][
        torch.arange(num_samples)[:, None, None, None],
        torch.arange(3)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    ky, kx = freqs[labels, 0], freqs[labels, 1]
    arg = 2 * np.pi * (ky[:, None, None] * yy + kx[:, None, None] * xx) + phases[:, None, None]
    texture = torch.sin(arg)[:, None]
    w_shape, w_texture = contrast[:, 0].clone(), contrast[:, 1].clone()
    w_shape[dropped & (which == 0)] = 0.0
    w_texture[dropped & (which == 1)] = 0.0
    images = (
        0.5 + 0.3 * w_shape[:, None, None, None] * shape + 0.15 * w_texture[:, None, None, None] * texture
    )
    images = (images + pixel_noise).clamp(0, 1)
    array = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return array, labels.numpy().astype(np.int64)


class SyntheticDataModule(ImageDataModule):
    """Deterministic in-memory 32x32 RGB classification data (the default; needs no download)."""

    mean = (0.5, 0.5, 0.5)
    std = (0.2, 0.2, 0.2)

    def __init__(
        self,
        num_train: int = 5000,
        num_val: int = 1000,
        num_classes: int = 10,
        image_size: int = 32,
        seed: int = 0,
        batch_size: int = 96,
        num_workers: int = 0,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        hflip: float = 0.5,
        drop_last: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, auto_augment, re_prob, hflip, drop_last)
        if num_classes < 2:
            raise InputError(f"num_classes must be >= 2, got {num_classes}")
        self.num_train, self.num_val, self.num_classes = num_train, num_val, num_classes
        self.image_size, self.seed = image_size, seed

    def build_datasets(self, train_transform, eval_transform):
        train = make_synthetic(self.num_train, self.num_classes, self.image_size, seed=self.seed)
        val = make_synthetic(self.num_val, self.num_classes, self.image_size, seed=self.seed + 1_000_003)
        return ArrayImageDataset(*train, train_transform), ArrayImageDataset(*val, eval_transform)
