"""A small corrupted test set in the CIFAR-C layout, made from the synthetic images (no download).

`configs/analysis/smoke.yaml` reads it from `data/SYNTHETIC-C` (`python -m alternet_pl.reproduce
--scale smoke` writes it there first): `<corruption>.npy` of 5 severities (severity 1 first) and
`labels.npy`, the layout `alternet_pl.data.corruptions` reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["SYNTHETIC_CORRUPTIONS_ROOT", "write_synthetic_corruptions"]

#: where the smoke scale writes the set (configs/analysis/smoke.yaml reads it)
SYNTHETIC_CORRUPTIONS_ROOT = Path("data/SYNTHETIC-C")


def _box_blur(images: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2 radius + 1)^2 box, wrapping at the borders; images are (N, H, W, C)."""
    out = np.zeros_like(images)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out += np.roll(images, (dy, dx), axis=(1, 2))
    return out / (2 * radius + 1) ** 2


def _corruptions(rng: np.random.Generator) -> dict[str, Callable[[np.ndarray, int], np.ndarray]]:
    """name -> f(images in [0, 1], severity 1..5): each harder with the severity. Noise and blur hit
    the high-frequency texture cue, contrast both cues, brightness neither."""

    def contrast(a: np.ndarray, severity: int) -> np.ndarray:
        mean = a.mean((1, 2, 3), keepdims=True)
        return (a - mean) * (0.7, 0.5, 0.35, 0.2, 0.1)[severity - 1] + mean

    return {
        "gaussian_noise": lambda a, s: a + rng.normal(0, (0.04, 0.08, 0.12, 0.18, 0.26)[s - 1], a.shape),
        "defocus_blur": _box_blur,
        "contrast": contrast,
        "brightness": lambda a, s: a + (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1],
    }


def write_synthetic_corruptions(
    root: str | Path = SYNTHETIC_CORRUPTIONS_ROOT, num_images: int = 500, seed: int = 7
) -> Path:
    """Write `<root>/<corruption>.npy` ((5 num_images, 32, 32, 3) uint8, severity 1 first) for Gaussian
    noise, a box blur (defocus), contrast and brightness, and `<root>/labels.npy`; returns `root`.
    The same `seed` gives the same bytes."""
    from alternet_pl.data.synthetic import make_synthetic

    root = Path(root)
    images, labels = make_synthetic(num_images, seed=seed)
    x = images.astype(np.float64) / 255.0
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, corrupt in _corruptions(rng).items():
        stack = np.concatenate([corrupt(x, severity) for severity in range(1, 6)])
        np.save(root / f"{name}.npy", (np.clip(stack, 0, 1) * 255).round().astype(np.uint8))
    np.save(root / "labels.npy", np.tile(labels, 5))
    return root
