"""Train / eval transforms built from timm's augmentation pieces (RandAugment, random erasing)."""

from __future__ import annotations

from timm.data import create_transform
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torchvision import transforms as T

from alternet_pl.errors import InputError


def build_transform(
    image_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    train: bool,
    style: str = "cifar",
    auto_augment: str | None = None,
    re_prob: float = 0.0,
    hflip: float = 0.5,
    crop_padding: int = 4,
) -> T.Compose:
    """The paper's transforms.

    style="cifar": RandomCrop(pad 4) + flip + timm RandAugment + normalise + timm random erasing.
    style="imagenet": timm's `create_transform` (random-resized crop, RandAugment, erasing) for
    training and resize + centre crop for evaluation.
    """
    if style not in ("cifar", "imagenet"):
        raise InputError(f"transform style {style!r} is not 'cifar' or 'imagenet'")
    if style == "imagenet":
        return create_transform(
            input_size=image_size,
            is_training=train,
            auto_augment=auto_augment if train else None,
            re_prob=re_prob if train else 0.0,
            mean=mean,
            std=std,
            hflip=hflip,
        )
    steps: list = []
    if train:
        if crop_padding:
            steps.append(T.RandomCrop(image_size, padding=crop_padding))
        if hflip > 0:
            steps.append(T.RandomHorizontalFlip(hflip))
        if auto_augment:
            fill = tuple(round(255 * m) for m in mean)
            steps.append(
                rand_augment_transform(
                    auto_augment, {"translate_const": int(image_size * 0.45), "img_mean": fill}
                )
            )
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if train and re_prob > 0:
        steps.append(RandomErasing(re_prob, mode="pixel", device="cpu"))
    return T.Compose(steps)
