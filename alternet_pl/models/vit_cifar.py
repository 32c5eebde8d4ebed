"""The paper's transformer baselines at CIFAR scale, as timm's own classes with CIFAR arguments.

Each class below subclasses a timm model only to add ``analysis_layers()``; forward code is timm's.
Per transformer block there are two taps, as the paper measures them: ``<block>.attn``, the state after
``x = x + attn(...)`` (the input of the block's ``norm2``; branch ``drop_path1``, whose output is exactly
the attention branch added to x), and ``<block>.mlp``, the block output (branch ``drop_path2``).

The first point of a ViT / PiT depth curve, the ``patch_embed`` tap, is the embedding *after* the CLS
token and the position embedding are added (the official ``PatchEmbed`` block, which does both): the
output of timm's ``pos_drop``, not of its patch projection. Swin has no position embedding: its tap is
the patch projection + norm.

Token layouts the analyses see: ViT ``patch_embed``/``.attn``/``.mlp`` taps are (B, N, D) with the CLS
token first when ``global_pool="token"``; PiT's ``patch_embed`` is a (B, D, H, W) map (its CLS token joins
inside the first stage) and its block taps are (B, 1 + H*W, D) (CLS first); Swin's ``.attn`` taps are
(B, H*W, D) while its ``.mlp``, ``patch_embed`` and ``norm`` taps are NHWC (B, H, W, D)
(``model.output_fmt == "NHWC"``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.pit import PoolingVisionTransformer
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from alternet_pl.errors import InputError

from .alternet import CIFAR100_MEAN, CIFAR100_STD
from .taps import Tap

__all__ = ["CifarPiT", "CifarSwin", "CifarViT"]

VIT_GLOBAL_POOLS = ("token", "avg")


def _block_taps(taps: OrderedDict[str, Tap], prefix: str, blocks: Iterable[nn.Module]) -> None:
    """Add the attention-step and MLP-step taps of each timm transformer block."""
    for i, blk in enumerate(blocks):
        attn = tuple(m for m in (blk.norm1, blk.attn, getattr(blk, "ls1", None)) if m is not None)
        mlp = tuple(m for m in (blk.norm2, blk.mlp, getattr(blk, "ls2", None)) if m is not None)
        taps[f"{prefix}{i}.attn"] = Tap(blk.norm2, "msa", point="input", branch=blk.drop_path1, params=attn)
        taps[f"{prefix}{i}.mlp"] = Tap(blk, "mlp", branch=blk.drop_path2, params=mlp)


class CifarViT(VisionTransformer):
    """timm's VisionTransformer plus ``analysis_layers()``."""

    def analysis_layers(self) -> OrderedDict[str, Tap]:
        """patch_embed (stem: after CLS + position embedding), ``blocks.i.attn`` / ``.mlp``, norm, head."""
        taps: OrderedDict[str, Tap] = OrderedDict(patch_embed=Tap(self.pos_drop, "stem"))
        _block_taps(taps, "blocks.", self.blocks)
        if not isinstance(self.norm, nn.Identity):
            taps["norm"] = Tap(self.norm, "norm")
        else:
            taps["fc_norm"] = Tap(self.fc_norm, "norm")
        taps["head"] = Tap(self.head, "head")
        return taps


class CifarPiT(PoolingVisionTransformer):
    """timm's PoolingVisionTransformer (PiT) plus ``analysis_layers()``."""

    def analysis_layers(self) -> OrderedDict[str, Tap]:
        """patch_embed (stem, after position embedding), ``transformers.s.blocks.i.attn/.mlp``, norm, head."""
        taps: OrderedDict[str, Tap] = OrderedDict(patch_embed=Tap(self.pos_drop, "stem"))
        for s, stage in enumerate(self.transformers):
            _block_taps(taps, f"transformers.{s}.blocks.", stage.blocks)
        taps["norm"] = Tap(self.norm, "norm")
        taps["head"] = Tap(self.head, "head")
        return taps


class CifarSwin(SwinTransformer):
    """timm's SwinTransformer plus ``analysis_layers()``."""

    def analysis_layers(self) -> OrderedDict[str, Tap]:
        """patch_embed (stem), ``layers.s.blocks.i.attn`` / ``.mlp``, norm, pool, head."""
        taps: OrderedDict[str, Tap] = OrderedDict(patch_embed=Tap(self.patch_embed, "stem"))
        for s, stage in enumerate(self.layers):
            _block_taps(taps, f"layers.{s}.blocks.", stage.blocks)
        taps["norm"] = Tap(self.norm, "norm")
        taps["pool"] = Tap(self.head.global_pool, "pool")
        taps["head"] = Tap(self.head.fc, "head")
        return taps


def _cfg(classifier: str = "head", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 100,
        "input_size": (3, 32, 32),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
        "first_conv": "patch_embed.proj",
        "classifier": classifier,
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "vit_cifar_ti": _cfg(),
        "vit_cifar_s": _cfg(),
        "vit_cifar_micro": _cfg(),
        "pit_cifar_ti": _cfg(first_conv="patch_embed.conv"),
        "pit_cifar_micro": _cfg(first_conv="patch_embed.conv"),
        "swin_cifar_ti": _cfg(classifier="head.fc"),
        "swin_cifar_micro": _cfg(classifier="head.fc"),
    }
)


def _create_vit_cifar(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarViT:
    """ViT; ``global_pool`` "token" (CLS token) or "avg" (GAP over patch tokens, no CLS token by default)."""
    global_pool = kwargs.setdefault("global_pool", "token")
    if global_pool not in VIT_GLOBAL_POOLS:
        raise InputError(f"global_pool={global_pool!r}; valid values are {VIT_GLOBAL_POOLS}")
    if global_pool == "avg":
        kwargs.setdefault("class_token", False)
    out_indices = kwargs.pop("out_indices", min(3, kwargs.get("depth", 12)))
    return build_model_with_cfg(
        CifarViT,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


def _create_pit_cifar(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarPiT:
    """PiT; timm's PiT pools by CLS token only."""
    global_pool = kwargs.setdefault("global_pool", "token")
    if global_pool != "token":
        raise InputError(f"global_pool={global_pool!r}; PiT supports only 'token'")
    out_indices = kwargs.pop("out_indices", (0, 1, 2))
    return build_model_with_cfg(
        CifarPiT, variant, pretrained, feature_cfg=dict(feature_cls="hook", out_indices=out_indices), **kwargs
    )


def _create_swin_cifar(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarSwin:
    """Swin; stochastic depth defaults to 0 like every model here (timm's Swin default is 0.1)."""
    kwargs.setdefault("drop_path_rate", 0.0)
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (1, 1, 3, 1))))))
    return build_model_with_cfg(
        CifarSwin,
        variant,
        pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


@register_model
def vit_cifar_ti(pretrained: bool = False, **kwargs: Any) -> CifarViT:
    """ViT-Ti for 32x32: patch 2 (256 tokens), dim 192, depth 12, 3 heads, no qkv bias (official)."""
    args = dict(img_size=32, patch_size=2, embed_dim=192, depth=12, num_heads=3, qkv_bias=False)
    return _create_vit_cifar("vit_cifar_ti", pretrained, **dict(args, **kwargs))


@register_model
def vit_cifar_s(pretrained: bool = False, **kwargs: Any) -> CifarViT:
    """ViT-S for 32x32: patch 2, dim 384, depth 12, 6 heads, no qkv bias (official)."""
    args = dict(img_size=32, patch_size=2, embed_dim=384, depth=12, num_heads=6, qkv_bias=False)
    return _create_vit_cifar("vit_cifar_s", pretrained, **dict(args, **kwargs))


@register_model
def vit_cifar_micro(pretrained: bool = False, **kwargs: Any) -> CifarViT:
    """Tiny ViT for tests and CPU smoke runs: patch 4 (64 tokens), dim 32, depth 2, 2 heads."""
    args = dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    return _create_vit_cifar("vit_cifar_micro", pretrained, **dict(args, **kwargs))


@register_model
def pit_cifar_ti(pretrained: bool = False, **kwargs: Any) -> CifarPiT:
    """PiT-Ti for 32x32: patch 2, stride 1 (31x31 tokens), 32 dims/head, depths (2, 6, 4), heads (2, 4, 8)."""
    args = dict(img_size=32, patch_size=2, stride=1, base_dims=(32, 32, 32), depth=(2, 6, 4), heads=(2, 4, 8))
    return _create_pit_cifar("pit_cifar_ti", pretrained, **dict(args, **kwargs))


@register_model
def pit_cifar_micro(pretrained: bool = False, **kwargs: Any) -> CifarPiT:
    """Tiny PiT: patch 4 stride 4 (8x8 -> 4x4 -> 2x2 tokens), 8 dims per head, one block per stage."""
    args = dict(img_size=32, patch_size=4, stride=4, base_dims=(8, 8, 8), depth=(1, 1, 1), heads=(1, 2, 4))
    return _create_pit_cifar("pit_cifar_micro", pretrained, **dict(args, **kwargs))


@register_model
def swin_cifar_ti(pretrained: bool = False, **kwargs: Any) -> CifarSwin:
    """Swin-Ti for 32x32: patch 1, window 4 (maps 32..4), dim 96, depths (2, 2, 6, 2), GAP, no qkv bias."""
    args = dict(
        img_size=32,
        patch_size=1,
        window_size=4,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        qkv_bias=False,
        global_pool="avg",
    )
    return _create_swin_cifar("swin_cifar_ti", pretrained, **dict(args, **kwargs))


@register_model
def swin_cifar_micro(pretrained: bool = False, **kwargs: Any) -> CifarSwin:
    """Tiny Swin: patch 2, window 4 (maps 16, 8, shifted windows in both), dim 16, depths (2, 2)."""
    args = dict(
        img_size=32,
        patch_size=2,
        window_size=4,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(1, 2),
        global_pool="avg",
    )
    return _create_swin_cifar("swin_cifar_micro", pretrained, **dict(args, **kwargs))
