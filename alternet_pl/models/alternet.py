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
    Stem,
)
from .layout import STEMS, check_arguments, check_style, check_window, place_msas, resolve_layout
from .taps import Tap

__all__ = ["AlterNet", "place_msas", "resolve_layout"]

# the authors' CIFAR-100 normalisation (ops/datasets.py get_cifar100); alternet_pl.data.cifar imports it
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
        check_arguments(block, stem, block_style, depths, widths=widths, num_heads=num_heads)
        depths = tuple(depths)
        self.layout = resolve_layout(depths, layout, msa_per_stage)
        check_style(block_style, self.layout)
        reduction, default_window, default_img = STEMS[stem]
        self.window_size = default_window if window_size is None else window_size
        img_size = default_img if img_size is None else img_size
        img_hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)

        self.num_classes, self.drop_rate, self.block_style = num_classes, drop_rate, block_style
        postact = block_style == "postact"
        self.stem = Stem(stem, in_chans, stem_width, postact)
        self.feature_info = [dict(num_chs=stem_width, reduction=reduction, module="stem")]
        total = sum(depths)
        rates = [drop_path_rate * j / (total - 1) if total > 1 else 0.0 for j in range(total)]
        msa = dict(head_dim=head_dim, window_size=self.window_size, rel_pos_per_head=rel_pos_per_head)
        hw = [-(-s // reduction) for s in img_hw]  # stride-2 convs / pools with padding round up
        in_chs, stages = stem_width, []
        for i, (letters, planes, heads) in enumerate(zip(self.layout, widths, num_heads)):
            stride = 1 if i == 0 else 2
            hw, reduction = [-(-s // stride) for s in hw], reduction * stride
            check_window(self.window_size, hw, i, letters, img_hw, stem)
            conv_block, msa_args = _CONV_BLOCKS[(block_style, block)], dict(msa, num_heads=heads)
            blocks, in_chs = _stage_blocks(letters, conv_block, in_chs, planes, stride, rates, msa_args)
            rates = rates[len(letters) :]  # the next stage continues the linear ramp
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


def _stage_blocks(
    letters: str,
    conv_block: type[nn.Module],
    in_chs: int,
    planes: int,
    stride: int,
    rates: Sequence[float],
    msa_args: dict[str, Any],
) -> tuple[list[nn.Module], int]:
    """The blocks of one stage (the first one strided) and the stage's output channels."""
    expansion = conv_block.expansion
    blocks: list[nn.Module] = []
    for j, (letter, rate) in enumerate(zip(letters, rates)):
        s = stride if j == 0 else 1
        if letter == "M":
            blocks.append(MSABlock(in_chs, planes, s, rate, expansion=expansion, **msa_args))
        else:
            blocks.append(conv_block(in_chs, planes, s, rate))
        in_chs = planes * expansion
    return blocks, in_chs


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
