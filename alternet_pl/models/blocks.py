"""Residual blocks of AlterNet: pre-activation conv blocks, the windowed MSA block, post-act conv blocks.

Every block computes ``shortcut(x) + residual(...)`` where ``block.residual`` is ONE module (an
``nn.Sequential`` ending in its DropPath). A forward hook on ``block.residual`` that returns zeros turns
the block into its shortcut: that is how the lesion study removes a block. Architecture facts follow
the paper's official code (see ``science.md``); initialisation is PyTorch's default, as there.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from timm.layers import DropPath
from torch import nn

from alternet_pl.errors import InputError


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free 1x1 convolution."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free 3x3 convolution, padding 1."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """Base of the pre-activation blocks: ``x + residual(act(norm(x)))``.

    When the shape changes, the 1x1 shortcut sees the pre-activated input (as in He et al. 2016 and
    the official code), so the normalisation is shared by both paths and lives outside ``residual``.
    """

    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int, act_layer: type[nn.Module]) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.norm = nn.BatchNorm2d(in_chs)
        self.act = act_layer()
        self.shortcut = conv1x1(in_chs, out_chs, stride) if stride != 1 or in_chs != out_chs else None
        self.residual: nn.Module = nn.Identity()  # set by subclasses

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm(x))
        skip = x if self.shortcut is None else self.shortcut(y)
        return skip + self.residual(y)


class PreActBasicBlock(PreActBlock):
    """Pre-activation basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3."""

    expansion = 1

    def __init__(
        self, in_chs: int, planes: int, stride: int = 1, drop_path: float = 0.0, **_: object
    ) -> None:
        super().__init__(in_chs, planes * self.expansion, stride, nn.ReLU)
        self.residual = nn.Sequential(
            OrderedDict(
                conv1=conv3x3(in_chs, planes, stride),
                norm2=nn.BatchNorm2d(planes),
                act2=nn.ReLU(),
                conv2=conv3x3(planes, planes * self.expansion),
                drop_path=DropPath(drop_path),
            )
        )


class PreActBottleneck(PreActBlock):
    """Pre-activation bottleneck: BN-ReLU-conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1 (x4)."""

    expansion = 4

    def __init__(
        self, in_chs: int, planes: int, stride: int = 1, drop_path: float = 0.0, **_: object
    ) -> None:
        super().__init__(in_chs, planes * self.expansion, stride, nn.ReLU)
        self.residual = nn.Sequential(
            OrderedDict(
                conv1=conv1x1(in_chs, planes),
                norm2=nn.BatchNorm2d(planes),
                act2=nn.ReLU(),
                conv2=conv3x3(planes, planes, stride),
                norm3=nn.BatchNorm2d(planes),
                act3=nn.ReLU(),
                conv3=conv1x1(planes, planes * self.expansion),
                drop_path=DropPath(drop_path),
            )
        )


class PostActBlock(nn.Module):
    """Base of the post-activation blocks (the paper's ResNet baseline): ``relu(shortcut(x) + residual(x))``.

    The shortcut is conv1x1-BN when the shape changes. A lesioned block gives ``relu(shortcut(x))``.
    """

    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.shortcut = (
            nn.Sequential(OrderedDict(conv=conv1x1(in_chs, out_chs, stride), norm=nn.BatchNorm2d(out_chs)))
            if stride != 1 or in_chs != out_chs
            else None
        )
        self.residual: nn.Module = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.act(skip + self.residual(x))


class PostActBasicBlock(PostActBlock):
    """Post-activation basic block: conv3x3(stride)-BN-ReLU-conv3x3-BN, add, ReLU."""

    expansion = 1

    def __init__(
        self, in_chs: int, planes: int, stride: int = 1, drop_path: float = 0.0, **_: object
    ) -> None:
        super().__init__(in_chs, planes * self.expansion, stride)
        self.residual = nn.Sequential(
            OrderedDict(
                conv1=conv3x3(in_chs, planes, stride),
                norm1=nn.BatchNorm2d(planes),
                act1=nn.ReLU(),
                conv2=conv3x3(planes, planes * self.expansion),
                norm2=nn.BatchNorm2d(planes * self.expansion),
                drop_path=DropPath(drop_path),
            )
        )


class PostActBottleneck(PostActBlock):
    """Post-activation bottleneck: conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN, add, ReLU."""

    expansion = 4

    def __init__(
        self, in_chs: int, planes: int, stride: int = 1, drop_path: float = 0.0, **_: object
    ) -> None:
        super().__init__(in_chs, planes * self.expansion, stride)
        self.residual = nn.Sequential(
            OrderedDict(
                conv1=conv1x1(in_chs, planes),
                norm1=nn.BatchNorm2d(planes),
                act1=nn.ReLU(),
                conv2=conv3x3(planes, planes, stride),
                norm2=nn.BatchNorm2d(planes),
                act2=nn.ReLU(),
                conv3=conv1x1(planes, planes * self.expansion),
                norm3=nn.BatchNorm2d(planes * self.expansion),
                drop_path=DropPath(drop_path),
            )
        )


def relative_position_index(window_size: int) -> torch.Tensor:
    """``idx[i, j]`` = flat index into a (2w-1, 2w-1) table of the offset from token i to token j.

    Tokens are numbered row-major inside a w x w window.
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)  # (2, w*w)
    rel = coords[:, None, :] - coords[:, :, None] + window_size - 1  # (2, N, N), in [0, 2w-2]
    return rel[0] * (2 * window_size - 1) + rel[1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping ``window_size`` x ``window_size`` windows.

    Input and output are NCHW maps. A learned relative-position bias is added to the logits; as in the
    official code it is one (2w-1, 2w-1) table shared by all heads (``rel_pos_per_head=True`` gives
    each head its own table, shape (heads, 2w-1, 2w-1)). Attention is written as explicit matmuls, so
    double backward (Hessian-vector products) works with every backend.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        head_dim: int = 64,
        window_size: int = 4,
        rel_pos_per_head: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.window_size = num_heads, head_dim, window_size
        self.scale = head_dim**-0.5
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.proj = nn.Linear(inner, dim_out)
        table = (2 * window_size - 1, 2 * window_size - 1)
        shape = (num_heads, *table) if rel_pos_per_head else table
        self.rel_pos_bias = nn.Parameter(torch.randn(shape) * 0.02)
        self.register_buffer("rel_pos_index", relative_position_index(window_size), persistent=False)

    def relative_bias(self) -> torch.Tensor:
        """The (heads or 1, N, N) bias added to the attention logits of every window."""
        n = self.window_size**2
        table = self.rel_pos_bias.reshape(-1, (2 * self.window_size - 1) ** 2)
        return table[:, self.rel_pos_index.reshape(-1)].reshape(-1, n, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.window_size
        if h % p or w % p:
            raise InputError(
                f"window_size={p} does not divide the {h}x{w} feature map given to WindowAttention; "
                "use an input size whose stage feature maps are multiples of the window"
            )
        n1, n2 = h // p, w // p
        # (b, c, n1, p, n2, p) -> (b * n1 * n2, p * p, c): one row of tokens per window
        t = x.reshape(b, c, n1, p, n2, p).permute(0, 2, 4, 3, 5, 1).reshape(b * n1 * n2, p * p, c)
        q, k, v = (
            self.qkv(t).reshape(t.shape[0], p * p, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )
        logits = (q * self.scale) @ k.transpose(-2, -1) + self.relative_bias()
        out = logits.softmax(dim=-1) @ v  # (B', heads, N, head_dim)
        out = self.proj(out.transpose(1, 2).reshape(t.shape[0], p * p, -1))
        out = out.reshape(b, n1, n2, p, p, -1).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(b, -1, h, w)


class MSABlock(PreActBlock):
    """AlterNet's MSA block (pre-activation, no MLP).

    BN-GELU -> 1x1 conv to ``in_chs // expansion`` -> BN -> windowed MSA (``num_heads`` x ``head_dim``)
    projecting to ``planes * expansion`` channels -> DropPath, added to the (1x1 conv when the shape
    changes) shortcut. A stride, only reached when a layout puts an MSA first in a stage, is taken by
    the reduction conv.
    """

    expansion = 4

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int = 1,
        drop_path: float = 0.0,
        num_heads: int = 8,
        head_dim: int = 64,
        window_size: int = 4,
        rel_pos_per_head: bool = False,
        expansion: int = 4,
        **_: object,
    ) -> None:
        out_chs = planes * expansion
        super().__init__(in_chs, out_chs, stride, nn.GELU)
        self.expansion = expansion
        width = in_chs // expansion
        self.residual = nn.Sequential(
            OrderedDict(
                conv=conv1x1(in_chs, width, stride),
                norm2=nn.BatchNorm2d(width),
                attn=WindowAttention(width, out_chs, num_heads, head_dim, window_size, rel_pos_per_head),
                drop_path=DropPath(drop_path),
            )
        )


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
