"""AlterNet (Park & Kim 2022) and the pre-/post-activation ResNets it is made of: one class, layout as data.

A model is a stem, stages of blocks and a BN-ReLU-GAP-Linear head. Each stage takes a string of block
letters, ``C`` (conv block) or ``M`` (MSA block), e.g. ``layout=["CCC", "CCCM", "CCCCCM", "CMCM"]``;
``msa_per_stage=(0, 1, 1, 2)`` writes the same thing by the official placement rule (a stage of n blocks
with k MSAs is ``C * (n - 2k) + "CM" * k``). A ResNet is the layout with no ``M``, so every point between
ResNet and AlterNet (the paper's build-up experiment) is one argument. Registered names:
``alternet_cifar_{18,34,50,101,152}`` (3x3 stem), ``alternet_{18,34,50,101,152}`` (ImageNet stem),
``resnet_cifar_{18,34,50,101,152}`` (no MSA; ``block_style="postact"`` gives the paper's post-activation
baseline) and the tiny ``alternet_cifar_micro`` / ``resnet_cifar_micro`` for tests and smoke runs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from alternet_pl.errors import InputError

from .blocks import (
    MSABlock,
    PostActBasicBlock,
    PostActBottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    conv3x3,
)
from .taps import Tap

__all__ = ["AlterNet", "place_msas", "resolve_layout"]

# the authors' CIFAR-100 normalisation (ops/datasets.py get_cifar100), as alternet_pl.data.cifar
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CONV_BLOCKS = {
    ("preact", "basic"): PreActBasicBlock,
    ("preact", "bottleneck"): PreActBottleneck,
    ("postact", "basic"): PostActBasicBlock,
    ("postact", "bottleneck"): PostActBottleneck,
}
_STEMS = {"cifar": (1, 4, 32), "imagenet": (4, 7, 224)}  # stem -> (reduction, default window, img size)


def place_msas(depths: Sequence[int], msa_per_stage: Sequence[int]) -> tuple[str, ...]:
    """The official placement: a stage of n blocks with k MSAs is ``"C" * (n - 2k) + "CM" * k``."""
    if len(msa_per_stage) != len(depths):
        raise InputError(
            f"msa_per_stage={tuple(msa_per_stage)} has {len(msa_per_stage)} entries; it needs one per "
            f"stage, {len(depths)} for depths={tuple(depths)}"
        )
    layout = []
    for i, (n, k) in enumerate(zip(depths, msa_per_stage)):
        if not isinstance(k, int) or k < 0 or 2 * k > n:
            raise InputError(
                f"msa_per_stage[{i}]={k!r} does not fit stage {i} of {n} blocks: the rule "
                f"C*(n-2k)+(CM)*k needs 2k <= n, so valid values are 0..{n // 2}"
            )
        layout.append("C" * (n - 2 * k) + "CM" * k)
    return tuple(layout)


def resolve_layout(
    depths: Sequence[int],
    layout: Sequence[str] | None = None,
    msa_per_stage: Sequence[int] | None = None,
) -> tuple[str, ...]:
    """Check ``layout`` (or build it from ``msa_per_stage``) against ``depths``; all-conv if both None."""
    if layout is not None and msa_per_stage is not None:
        raise InputError("pass either layout=[...] or msa_per_stage=(...), not both")
    if msa_per_stage is not None:
        return place_msas(depths, msa_per_stage)
    if layout is None:
        return tuple("C" * n for n in depths)
    if isinstance(layout, str) or len(layout) != len(depths):
        raise InputError(
            f"layout={layout!r} must be a list of {len(depths)} strings, one per stage "
            f"(depths={tuple(depths)}), e.g. {list(place_msas(depths, [0] * len(depths)))}"
        )
    for i, (s, n) in enumerate(zip(layout, depths)):
        if not isinstance(s, str):
            raise InputError(f"layout[{i}]={s!r} must be a string of 'C' and 'M' letters")
        bad = sorted(set(s) - {"C", "M"})
        if bad:
            raise InputError(
                f"layout[{i}]={s!r} has letter(s) {bad}; "
                "valid letters are 'C' (conv block) and 'M' (MSA block)"
            )
        if len(s) != n:
            raise InputError(
                f"layout[{i}]={s!r} has {len(s)} blocks but stage {i} has {n} (depths={tuple(depths)}); "
                "give each stage exactly its block count, or pass depths=... as well"
            )
    return tuple(layout)


class Stem(nn.Module):
    """CIFAR: conv3x3 stride 1. ImageNet: conv7x7 stride 2 + 3x3 max-pool stride 2.

    Pre-activation models put no BN-ReLU here (the first block normalises); post-activation ones do.
    """

    def __init__(self, kind: str, in_chans: int, width: int, postact: bool) -> None:
        super().__init__()
        if kind == "cifar":
            self.conv = conv3x3(in_chans, width)
        else:
            self.conv = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.norm = nn.BatchNorm2d(width) if postact else nn.Identity()
        self.act = nn.ReLU() if postact else nn.Identity()
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if kind == "imagenet" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class AlterNet(nn.Module):
    """ResNet stages whose blocks follow a C/M layout, with stochastic depth linear in the block index.

    Args:
        block: "basic" (expansion 1) or "bottleneck" (expansion 4) conv blocks.
        depths: blocks per stage.
        layout: one string of 'C'/'M' per stage; or ``msa_per_stage`` (official rule); neither: a ResNet.
        widths: planes per stage (output channels = planes * expansion); strides are 1, 2, 2, ...
        stem: "cifar" or "imagenet"; sets the default ``window_size`` (4 / 7) and ``img_size`` (32 / 224).
        num_heads: MSA heads per stage; ``head_dim`` channels per head.
        img_size: input size the windows are checked against at construction.
        block_style: "preact" (AlterNet's blocks) or "postact" (the paper's ResNet baseline; no MSA).
        drop_path_rate: stochastic depth of the last block; block j of J gets ``rate * j / (J - 1)``.
    """

    def __init__(
        self,
        block: str = "bottleneck",
        depths: Sequence[int] = (3, 4, 6, 4),
        layout: Sequence[str] | None = None,
        msa_per_stage: Sequence[int] | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        stem: str = "cifar",
        num_heads: Sequence[int] = (3, 6, 12, 24),
        head_dim: int = 64,
        window_size: int | None = None,
        rel_pos_per_head: bool = False,
        img_size: int | Sequence[int] | None = None,
        block_style: str = "preact",
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise InputError(f"block={block!r}; valid values are 'basic' and 'bottleneck'")
        if stem not in _STEMS:
            raise InputError(f"stem={stem!r}; valid values are {sorted(_STEMS)}")
        if block_style not in ("preact", "postact"):
            raise InputError(f"block_style={block_style!r}; valid values are 'preact' and 'postact'")
        depths = tuple(depths)
        if not depths or any(not isinstance(n, int) or n < 1 for n in depths):
            raise InputError(f"depths={depths!r} must be positive block counts, one per stage")
        for name, seq in (("widths", widths), ("num_heads", num_heads)):
            if len(seq) != len(depths):
                raise InputError(
                    f"{name}={tuple(seq)} needs one entry per stage ({len(depths)}, from depths)"
                )
        self.layout = resolve_layout(depths, layout, msa_per_stage)
        if block_style == "postact" and any("M" in s for s in self.layout):
            raise InputError(
                f"block_style='postact' is the post-activation ResNet baseline and takes no MSA blocks, "
                f"but the layout is {list(self.layout)}; use block_style='preact' for AlterNets"
            )
        reduction, default_window, default_img = _STEMS[stem]
        self.window_size = window = default_window if window_size is None else window_size
        img_size = default_img if img_size is None else img_size
        img_hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)

        self.num_classes, self.drop_rate, self.block_style = num_classes, drop_rate, block_style
        postact = block_style == "postact"
        conv_block = _CONV_BLOCKS[(block_style, block)]
        expansion = conv_block.expansion
        self.stem = Stem(stem, in_chans, stem_width, postact)
        self.feature_info = [dict(num_chs=stem_width, reduction=reduction, module="stem")]

        total = sum(depths)
        rates = [drop_path_rate * j / (total - 1) if total > 1 else 0.0 for j in range(total)]
        hw = [-(-s // reduction) for s in img_hw]  # stride-2 convs / pools with padding round up
        in_chs, idx, stages = stem_width, 0, []
        for i, (letters, planes, heads) in enumerate(zip(self.layout, widths, num_heads)):
            stride = 1 if i == 0 else 2
            hw = [-(-s // stride) for s in hw]
            reduction *= stride
            if "M" in letters and (hw[0] % window or hw[1] % window):
                raise InputError(
                    f"window_size={window} does not divide the {hw[0]}x{hw[1]} feature map of stage {i} "
                    f"(layout[{i}]={letters!r}, img_size={img_hw[0]}x{img_hw[1]}, stem={stem!r}); use a "
                    f"window that divides {hw[0]}x{hw[1]}, another img_size, or no 'M' in that stage"
                )
            blocks = []
            for j, letter in enumerate(letters):
                s = stride if j == 0 else 1
                if letter == "M":
                    blk = MSABlock(
                        in_chs,
                        planes,
                        s,
                        rates[idx],
                        num_heads=heads,
                        head_dim=head_dim,
                        window_size=window,
                        rel_pos_per_head=rel_pos_per_head,
                        expansion=expansion,
                    )
                else:
                    blk = conv_block(in_chs, planes, s, rates[idx])
                blocks.append(blk)
                in_chs, idx = planes * expansion, idx + 1
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = in_chs
        self.norm = nn.Identity() if postact else nn.BatchNorm2d(in_chs)
        self.act = nn.Identity() if postact else nn.ReLU()
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New head for ``num_classes`` (timm's API)."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, stages and (pre-activation) the final BN-ReLU: the (B, C, H, W) map the head pools."""
        return self.act(self.norm(self.stages(self.stem(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's intermediate-feature API: index 0 is the stem, 1.. the stages."""
        if output_fmt != "NCHW":
            raise InputError(f"output_fmt={output_fmt!r}; only 'NCHW' is supported")
        take, max_index = feature_take_indices(len(self.stages) + 1, indices)
        x = self.stem(x)
        out = [x] if 0 in take else []
        stages = self.stages[:max_index] if stop_early else self.stages
        for i, stage in enumerate(stages, start=1):
            x = stage(x)
            if i in take:
                out.append(x)
        if intermediates_only:
            return out
        return self.act(self.norm(x)), out

    def analysis_layers(self) -> OrderedDict[str, Tap]:
        """stem, ``stages.i.j`` per block (kind conv/msa, branch ``block.residual``), norm, pool, head."""
        taps: OrderedDict[str, Tap] = OrderedDict(stem=Tap(self.stem, "stem"))
        for i, stage in enumerate(self.stages):
            for j, blk in enumerate(stage):
                kind = "msa" if isinstance(blk, MSABlock) else "conv"
                taps[f"stages.{i}.{j}"] = Tap(blk, kind, branch=blk.residual, params=(blk,))
        if self.block_style == "preact":
            taps["norm"] = Tap(self.act, "norm")
        taps["pool"] = Tap(self.global_pool, "pool")
        taps["head"] = Tap(self.fc, "head")
        return taps


def _cfg(cifar: bool = True, **kwargs: Any) -> dict[str, Any]:
    size = 32 if cifar else 224
    return {
        "url": "",
        "num_classes": 100 if cifar else 1000,
        "input_size": (3, size, size),
        "pool_size": (size // 8, size // 8) if cifar else (7, 7),
        "crop_pct": 1.0 if cifar else 0.875,
        "interpolation": "bicubic",
        "mean": CIFAR100_MEAN if cifar else IMAGENET_MEAN,
        "std": CIFAR100_STD if cifar else IMAGENET_STD,
        "first_conv": "stem.conv",
        "classifier": "fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        **{f"alternet_cifar_{d}": _cfg() for d in (18, 34, 50, 101, 152)},
        **{f"alternet_{d}": _cfg(cifar=False) for d in (18, 34, 50, 101, 152)},
        **{f"resnet_cifar_{d}": _cfg() for d in (18, 34, 50, 101, 152)},
        "alternet_cifar_micro": _cfg(),
        "resnet_cifar_micro": _cfg(),
    }
)


def _create_alternet(
    variant: str, pretrained: bool = False, default_msa: Sequence[int] | None = None, **kwargs: Any
) -> AlterNet:
    """Build through timm (pretrained_cfg, ``features_only``); ``default_msa`` yields to a user ``layout``."""
    if kwargs.get("layout") is None and default_msa is not None:
        kwargs.setdefault("msa_per_stage", default_msa)
    return build_model_with_cfg(
        AlterNet, variant, pretrained, feature_cfg=dict(flatten_sequential=True), **kwargs
    )


_MICRO = dict(
    block="basic",
    depths=(1, 1, 2, 2),
    widths=(8, 16, 32, 64),
    stem_width=8,
    num_heads=(1, 1, 2, 2),
    head_dim=16,
)


@register_model
def alternet_cifar_18(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """AlterNet-18, CIFAR stem: basic blocks (2, 2, 2, 2), MSAs (0, 1, 1, 1)."""
    args = dict(block="basic", depths=(2, 2, 2, 2), stem="cifar")
    return _create_alternet("alternet_cifar_18", pretrained, (0, 1, 1, 1), **dict(args, **kwargs))


@register_model
def alternet_cifar_34(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """AlterNet-34, CIFAR stem: basic blocks (3, 4, 6, 4), MSAs (0, 1, 3, 2)."""
    args = dict(block="basic", depths=(3, 4, 6, 4), stem="cifar")
    return _create_alternet("alternet_cifar_34", pretrained, (0, 1, 3, 2), **dict(args, **kwargs))


@register_model
def alternet_cifar_50(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """AlterNet-50, CIFAR stem: bottlenecks (3, 4, 6, 4), MSAs (0, 1, 3, 2) (code; figure: 0, 1, 1, 2)."""
    args = dict(block="bottleneck", depths=(3, 4, 6, 4), stem="cifar")
    return _create_alternet("alternet_cifar_50", pretrained, (0, 1, 3, 2), **dict(args, **kwargs))


@register_model
def alternet_cifar_101(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """AlterNet-101, CIFAR stem: bottlenecks (3, 4, 23, 4), MSAs (0, 1, 3, 2)."""
    args = dict(block="bottleneck", depths=(3, 4, 23, 4), stem="cifar")
    return _create_alternet("alternet_cifar_101", pretrained, (0, 1, 3, 2), **dict(args, **kwargs))


@register_model
def alternet_cifar_152(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """AlterNet-152, CIFAR stem: bottlenecks (3, 8, 36, 4), MSAs (0, 1, 3, 2)."""
    args = dict(block="bottleneck", depths=(3, 8, 36, 4), stem="cifar")
    return _create_alternet("alternet_cifar_152", pretrained, (0, 1, 3, 2), **dict(args, **kwargs))


@register_model
def alternet_18(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """AlterNet-18, ImageNet stem, window 7."""
    args = dict(block="basic", depths=(2, 2, 2, 2), stem="imagenet")
    return _create_alternet("alternet_18", pretrained, (0, 1, 1, 1), **dict(args, **kwargs))


@register_model
def alternet_34(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """AlterNet-34, ImageNet stem, window 7."""
    args = dict(block="basic", depths=(3, 4, 6, 4), stem="imagenet")
    return _create_alternet("alternet_34", pretrained, (0, 1, 3, 2), **dict(args, **kwargs))


@register_model
def alternet_50(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """AlterNet-50, ImageNet stem, window 7."""
    args = dict(block="bottleneck", depths=(3, 4, 6, 4), stem="imagenet")
    return _create_alternet("alternet_50", pretrained, (0, 1, 3, 2), **dict(args, **kwargs))


@register_model
def alternet_101(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """AlterNet-101, ImageNet stem, window 7."""
    args = dict(block="bottleneck", depths=(3, 4, 23, 4), stem="imagenet")
    return _create_alternet("alternet_101", pretrained, (0, 1, 3, 2), **dict(args, **kwargs))


@register_model
def alternet_152(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """AlterNet-152, ImageNet stem, window 7."""
    args = dict(block="bottleneck", depths=(3, 8, 36, 4), stem="imagenet")
    return _create_alternet("alternet_152", pretrained, (0, 1, 3, 2), **dict(args, **kwargs))


@register_model
def resnet_cifar_18(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """Pre-activation ResNet-18, CIFAR stem (``block_style="postact"``: post-activation)."""
    args = dict(block="basic", depths=(2, 2, 2, 2), stem="cifar")
    return _create_alternet("resnet_cifar_18", pretrained, **dict(args, **kwargs))


@register_model
def resnet_cifar_34(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """Pre-activation ResNet-34 (3, 4, 6, 3), CIFAR stem."""
    args = dict(block="basic", depths=(3, 4, 6, 3), stem="cifar")
    return _create_alternet("resnet_cifar_34", pretrained, **dict(args, **kwargs))


@register_model
def resnet_cifar_50(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """Pre-activation ResNet-50 (3, 4, 6, 3), CIFAR stem."""
    args = dict(block="bottleneck", depths=(3, 4, 6, 3), stem="cifar")
    return _create_alternet("resnet_cifar_50", pretrained, **dict(args, **kwargs))


@register_model
def resnet_cifar_101(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """Pre-activation ResNet-101 (3, 4, 23, 3), CIFAR stem."""
    args = dict(block="bottleneck", depths=(3, 4, 23, 3), stem="cifar")
    return _create_alternet("resnet_cifar_101", pretrained, **dict(args, **kwargs))


@register_model
def resnet_cifar_152(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """Pre-activation ResNet-152 (3, 8, 36, 3), CIFAR stem."""
    args = dict(block="bottleneck", depths=(3, 8, 36, 3), stem="cifar")
    return _create_alternet("resnet_cifar_152", pretrained, **dict(args, **kwargs))


@register_model
def alternet_cifar_micro(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """Tiny AlterNet for tests and CPU smoke runs: widths 8..64, layout C, C, CM, CM."""
    return _create_alternet("alternet_cifar_micro", pretrained, (0, 0, 1, 1), **dict(_MICRO, **kwargs))


@register_model
def resnet_cifar_micro(pretrained: bool = False, **kwargs: Any) -> AlterNet:
    """The micro AlterNet with no MSA."""
    return _create_alternet("resnet_cifar_micro", pretrained, **dict(_MICRO, **kwargs))
