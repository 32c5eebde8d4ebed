"""Model zoo tests, against references written here (closed-form parameter counts, brute-force attention).

Full-size models are built on the meta device (shapes only, no memory, no init cost) unless a test runs
them; the micro models are the ones that run forward/backward.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import pytest
import timm
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import alternet_pl.models as zoo
from alternet_pl.models.blocks import MSABlock, PreActBlock, WindowAttention
from alternet_pl.models.taps import KINDS

ALTERNETS = [f"alternet_cifar_{d}" for d in (18, 34, 50, 101, 152)] + [
    f"alternet_{d}" for d in (18, 34, 50, 101, 152)
]
RESNETS = [f"resnet_cifar_{d}" for d in (18, 34, 50, 101, 152)]
TRANSFORMERS = ["vit_cifar_ti", "vit_cifar_s", "pit_cifar_ti", "swin_cifar_ti"]
MICROS = [
    "alternet_cifar_micro",
    "resnet_cifar_micro",
    "vit_cifar_micro",
    "pit_cifar_micro",
    "swin_cifar_micro",
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def build_meta(name: str, **kwargs: object) -> nn.Module:
    """A full-size model with meta tensors: its structure and parameter shapes, nothing computed."""
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- independent parameter counts

# (block, depths, MSAs per stage) from science.md / the official code; ResNets have 3 blocks in stage 4.
ARCH = {
    18: ("basic", (2, 2, 2, 2), (0, 1, 1, 1)),
    34: ("basic", (3, 4, 6, 4), (0, 1, 3, 2)),
    50: ("bottleneck", (3, 4, 6, 4), (0, 1, 3, 2)),
    101: ("bottleneck", (3, 4, 23, 4), (0, 1, 3, 2)),
    152: ("bottleneck", (3, 8, 36, 4), (0, 1, 3, 2)),
}
RESNET_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def closed_form_alternet(
    block: str,
    depths: tuple[int, ...],
    msa: tuple[int, ...],
    imagenet: bool = False,
    num_classes: int = 100,
    postact: bool = False,
    window: int = 4,
    heads: tuple[int, ...] = (3, 6, 12, 24),
    head_dim: int = 64,
) -> int:
    """Parameter count of the architecture in science.md, by hand: conv weights, BN (2 per channel), MSAs."""
    exp = 4 if block == "bottleneck" else 1
    bn = 2
    n = 3 * 64 * (49 if imagenet else 9) + (bn * 64 if postact else 0)
    cin = 64
    for i, (d, k) in enumerate(zip(depths, msa)):
        w = 64 * 2**i
        cout = w * exp
        for j in range(d):
            is_msa = j >= d - 2 * k and (j - (d - 2 * k)) % 2 == 1
            if is_msa:
                width, inner = cin // exp, heads[i] * head_dim
                n += bn * cin + cin * width + bn * width + 3 * width * inner + inner * cout + cout
                n += (2 * window - 1) ** 2
            elif block == "bottleneck":
                n += w * cin + 9 * w * w + w * cout + bn * (2 * w) + bn * (cout if postact else cin)
            else:
                n += 9 * cin * w + 9 * w * w + bn * w + bn * (w if postact else cin)
            if j == 0 and (i > 0 or cin != cout):
                n += cin * cout + (bn * cout if postact else 0)
            cin = cout
    return n + (0 if postact else bn * cin) + cin * num_classes + num_classes


def closed_form_vit(
    dim: int,
    depth: int,
    patch: int = 2,
    img: int = 32,
    num_classes: int = 100,
    cls: bool = True,
    qkv_bias: bool = False,
) -> int:
    """ViT: patch conv, CLS, position table, 12*D^2 + 10*D per block (qkv, proj, MLP, 2 LNs; + 3*D with a
    qkv bias), LN, head."""
    tokens = (img // patch) ** 2 + int(cls)
    return (
        3 * patch * patch * dim
        + dim
        + int(cls) * dim
        + tokens * dim
        + depth * (12 * dim**2 + 10 * dim + 3 * dim * int(qkv_bias))
        + 2 * dim
        + dim * num_classes
        + num_classes
    )


# The models whose CIFAR-100 checkpoints the authors published (and AlterNet-50, whose checkpoints their
# code writes): exact parameter counts of the official models (their code; timm 0.4.9 for ViT/PiT/Swin).
PUBLISHED = {
    ("alternet_cifar_50", ()): 34_062_538,
    ("resnet_cifar_50", (("block_style", "postact"),)): 23_705_252,
    ("vit_cifar_ti", ()): 5_403_172,
    ("pit_cifar_ti", ()): 4_582_436,
    ("swin_cifar_ti", ()): 27_562_126,
}


# science.md, CIFAR-100 head unless said
SCIENCE = {
    ("alternet_cifar_50", ()): 34.1e6,
    ("alternet_cifar_50", (("msa_per_stage", (0, 1, 1, 2)),)): 33.0e6,
    ("alternet_50", (("num_classes", 1000),)): 35.9e6,
    ("alternet_101", (("num_classes", 1000),)): 54.9e6,
    ("alternet_152", (("num_classes", 1000),)): 70.6e6,
    ("resnet_cifar_50", ()): 23.70e6,
    ("resnet_cifar_50", (("block_style", "postact"),)): 23.71e6,
    ("vit_cifar_ti", ()): 5.4e6,
}


@pytest.mark.parametrize("depth", sorted(ARCH))
@pytest.mark.parametrize("family", ["alternet_cifar", "alternet", "resnet_cifar", "resnet_cifar_postact"])
def test_param_count_matches_closed_form(family: str, depth: int) -> None:
    block, depths, msa = ARCH[depth]
    imagenet = family == "alternet"
    kwargs: dict[str, object] = {"num_classes": 1000 if imagenet else 100}
    if family.startswith("resnet"):
        depths, msa = RESNET_DEPTHS[depth], (0, 0, 0, 0)
    if family == "resnet_cifar_postact":
        kwargs["block_style"] = "postact"
    name = f"{family.removesuffix('_postact')}_{depth}"
    expected = closed_form_alternet(
        block,
        depths,
        msa,
        imagenet=imagenet,
        num_classes=kwargs["num_classes"],  # type: ignore[arg-type]
        postact=family.endswith("postact"),
        window=7 if imagenet else 4,
    )
    assert num_params(build_meta(name, **kwargs)) == expected


def test_param_count_figure_layout_and_vit_closed_form() -> None:
    assert num_params(build_meta("alternet_cifar_50", msa_per_stage=(0, 1, 1, 2))) == closed_form_alternet(
        "bottleneck", (3, 4, 6, 4), (0, 1, 1, 2)
    )
    assert num_params(build_meta("vit_cifar_ti")) == closed_form_vit(192, 12)
    assert num_params(build_meta("vit_cifar_s")) == closed_form_vit(384, 12)
    assert num_params(build_meta("vit_cifar_ti", global_pool="avg")) == closed_form_vit(192, 12, cls=False)
    assert num_params(build_meta("vit_cifar_ti", qkv_bias=True)) == closed_form_vit(192, 12, qkv_bias=True)


@pytest.mark.parametrize(("name", "kwargs"), list(PUBLISHED), ids=lambda v: str(v))
def test_param_count_of_every_published_model_is_exact(name: str, kwargs: tuple) -> None:
    assert num_params(build_meta(name, **dict(kwargs))) == PUBLISHED[(name, kwargs)]


def test_official_transformers_have_no_qkv_bias_but_pit_does() -> None:
    """ViT-Ti, ViT-S and Swin-Ti are built with ``qkv_bias=False`` (the authors' code); PiT keeps timm's."""
    for name in ("vit_cifar_ti", "vit_cifar_s", "swin_cifar_ti"):
        assert not any(k.endswith("qkv.bias") for k in build_meta(name).state_dict()), name
    assert any(k.endswith("qkv.bias") for k in build_meta("pit_cifar_ti").state_dict())


def test_transformer_stem_tap_is_after_cls_token_and_position_embedding() -> None:
    """The first depth-curve point is the official PatchEmbed block's output: CLS + position added."""
    x = torch.randn(2, 3, 32, 32)
    for name in ("vit_cifar_micro", "pit_cifar_micro"):
        model = timm.create_model(name).eval()
        with torch.no_grad():
            model.pos_embed.normal_()  # a position embedding far from zero, so skipping it would show
        tap = zoo.analysis_layers(model)["patch_embed"]
        seen: list[torch.Tensor] = []
        handle = tap.module.register_forward_hook(lambda m, a, o, seen=seen: seen.append(o))
        with torch.no_grad():
            model(x)
            patches = model.patch_embed(x)
        handle.remove()
        if name.startswith("vit"):  # (B, 1 + N, D): CLS first, then patches, each plus its position row
            want = torch.cat([model.cls_token.expand(2, -1, -1), patches], 1) + model.pos_embed
        else:  # PiT: a (B, D, H, W) map plus the position map; the CLS token joins in the first stage
            want = patches + model.pos_embed
        torch.testing.assert_close(seen[0], want)


@pytest.mark.parametrize(("name", "kwargs"), list(SCIENCE), ids=lambda v: str(v))
def test_param_count_within_2_percent_of_science(name: str, kwargs: tuple) -> None:
    n = num_params(build_meta(name, **dict(kwargs)))
    assert abs(n - SCIENCE[(name, kwargs)]) / SCIENCE[(name, kwargs)] < 0.02, n


# ----------------------------------------------------------------------------- windowed attention


def brute_force_window_attention(attn: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Loops over images, windows, heads and token pairs; bias by explicit (dy, dx) offsets."""
    b, c, h, w = x.shape
    p, nh, hd = attn.window_size, attn.num_heads, attn.head_dim
    wq, wk, wv = attn.qkv.weight.reshape(3, nh, hd, c)
    table = attn.rel_pos_bias if attn.rel_pos_bias.dim() == 3 else attn.rel_pos_bias.expand(nh, -1, -1)
    out = torch.zeros(b, nh * hd, h, w, dtype=x.dtype)
    for bi in range(b):
        for wy in range(0, h, p):
            for wx in range(0, w, p):
                pos = [(wy + dy, wx + dx) for dy in range(p) for dx in range(p)]  # row-major tokens
                tok = torch.stack([x[bi, :, y, xx] for y, xx in pos])  # (N, C)
                for head in range(nh):
                    q, k, v = tok @ wq[head].T, tok @ wk[head].T, tok @ wv[head].T
                    logits = torch.empty(len(pos), len(pos), dtype=x.dtype)
                    for i, (yi, xi) in enumerate(pos):
                        for j, (yj, xj) in enumerate(pos):
                            bias = table[head, yj - yi + p - 1, xj - xi + p - 1]
                            logits[i, j] = (q[i] @ k[j]) / math.sqrt(hd) + bias
                    o = logits.softmax(-1) @ v
                    for i, (y, xx) in enumerate(pos):
                        out[bi, head * hd : (head + 1) * hd, y, xx] = o[i]
    return torch.einsum("oc,bchw->bohw", attn.proj.weight, out) + attn.proj.bias[None, :, None, None]


@pytest.mark.parametrize("per_head", [False, True])
def test_window_attention_equals_brute_force(per_head: bool) -> None:
    attn = WindowAttention(6, 5, num_heads=2, head_dim=3, window_size=3, rel_pos_per_head=per_head).double()
    with torch.no_grad():
        attn.rel_pos_bias.normal_()  # large enough that a wrong offset would show
    x = torch.randn(2, 6, 6, 9, dtype=torch.float64)
    torch.testing.assert_close(attn(x), brute_force_window_attention(attn, x), rtol=1e-10, atol=1e-10)


def test_relative_position_bias_shape_and_sharing() -> None:
    """Official code: one (2w-1, 2w-1) table shared by all heads; heads, head dim 64 and window per stage."""
    for name, window in (("alternet_cifar_50", 4), ("alternet_50", 7)):
        model = build_meta(name)
        msas = [
            (i, blk) for i, stage in enumerate(model.stages) for blk in stage if isinstance(blk, MSABlock)
        ]
        assert [i for i, _ in msas] == [1, 2, 2, 2, 3, 3]
        for i, blk in msas:
            attn = blk.residual.attn
            assert attn.rel_pos_bias.shape == (2 * window - 1, 2 * window - 1)
            assert (attn.window_size, attn.num_heads, attn.head_dim) == (window, (3, 6, 12, 24)[i], 64)
    attn = WindowAttention(8, 8, num_heads=4, head_dim=2, window_size=4)
    bias = attn.relative_bias()
    assert bias.shape == (1, 16, 16)  # broadcast over heads: shared
    assert WindowAttention(8, 8, 4, 2, 4, rel_pos_per_head=True).relative_bias().shape == (4, 16, 16)


# ----------------------------------------------------------------------------- layouts


def test_placement_rule_gives_official_layouts() -> None:
    assert zoo.place_msas((3, 4, 6, 4), (0, 1, 3, 2)) == ("CCC", "CCCM", "CMCMCM", "CMCM")
    assert zoo.place_msas((3, 4, 6, 4), (0, 1, 1, 2)) == ("CCC", "CCCM", "CCCCCM", "CMCM")
    assert zoo.place_msas((2, 2, 2, 2), (0, 1, 1, 1)) == ("CC", "CM", "CM", "CM")
    assert zoo.place_msas((3, 4, 23, 4), (0, 1, 3, 2))[2] == "C" * 17 + "CM" * 3
    model = build_meta("alternet_cifar_50")
    assert model.layout == ("CCC", "CCCM", "CMCMCM", "CMCM")
    got = ["".join("M" if isinstance(b, MSABlock) else "C" for b in stage) for stage in model.stages]
    assert got == list(model.layout)
    fig = ["CCC", "CCCM", "CCCCCM", "CMCM"]
    assert build_meta("alternet_cifar_50", layout=fig).layout == tuple(fig)
    assert build_meta("alternet_cifar_50", msa_per_stage=(0, 1, 1, 2)).layout == tuple(fig)
    assert build_meta("resnet_cifar_50").layout == ("CCC", "CCCC", "CCCCCC", "CCC")
    # the build-up experiment: a ResNet-depth layout with MSAs from the end, one argument
    assert build_meta("resnet_cifar_50", layout=["CCC", "CCCC", "CCCCCM", "CCM"]).layout[3] == "CCM"


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        (
            "alternet_cifar_50",
            dict(layout=["CCC", "CCCX", "CCCCCM", "CMCM"]),
            r"layout\[1\]='CCCX'.*'X'.*'C'.*'M'",
        ),
        ("alternet_cifar_50", dict(layout=["CCC", "CCCM", "CCCCCM"]), r"layout=.*4 strings, one per stage"),
        ("alternet_cifar_50", dict(layout="CCCM"), r"layout=.*4 strings"),
        (
            "alternet_cifar_50",
            dict(layout=["CCC", "CCM", "CCCCCM", "CMCM"]),
            r"layout\[1\].*3 blocks.*stage 1 has 4",
        ),
        ("alternet_cifar_50", dict(msa_per_stage=(0, 1, 4, 2)), r"msa_per_stage\[2\]=4 .*6 blocks.*0\.\.3"),
        ("alternet_cifar_50", dict(msa_per_stage=(0, 1, 3)), r"msa_per_stage=.*one per stage, 4"),
        (
            "resnet_cifar_50",
            dict(layout=["CCC"] * 4, msa_per_stage=(0, 0, 0, 0)),
            r"either layout.*or msa_per_stage",
        ),
        ("alternet_cifar_50", dict(window_size=3), r"window_size=3.*16x16 feature map of stage 1"),
        (
            "alternet_cifar_50",
            dict(img_size=40),
            r"window_size=4.*10x10 feature map of stage 2.*img_size=40x40",
        ),
        ("alternet_50", dict(img_size=32), r"window_size=7.*4x4 feature map of stage 1.*stem=.imagenet."),
        ("alternet_cifar_50", dict(block_style="postact"), r"block_style='postact'.*no MSA"),
        ("alternet_cifar_50", dict(block_style="pre"), r"block_style='pre'.*'preact'.*'postact'"),
        ("alternet_cifar_50", dict(stem="tiny"), r"stem='tiny'.*cifar.*imagenet"),
        ("alternet_cifar_50", dict(block="wide"), r"block='wide'.*'basic'.*'bottleneck'"),
        ("vit_cifar_ti", dict(global_pool="max"), r"global_pool='max'.*'token', 'avg'"),
        ("pit_cifar_ti", dict(global_pool="avg"), r"global_pool='avg'.*'token'"),
    ],
)
def test_bad_input_raises_clear_error(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_meta(name, **kwargs)


def test_window_error_at_forward_for_other_input_sizes() -> None:
    model = timm.create_model("alternet_cifar_micro").eval()
    with pytest.raises(ValueError, match=r"window_size=4 does not divide the 9x9 feature map"):
        model(torch.randn(1, 3, 36, 36))


def test_drop_path_rates_linear_in_block_index() -> None:
    model = build_meta("alternet_cifar_50", drop_path_rate=0.1)
    rates = [blk.residual.drop_path.drop_prob for stage in model.stages for blk in stage]
    assert len(rates) == 17
    assert rates == pytest.approx([0.1 * j / 16 for j in range(17)])


# ----------------------------------------------------------------------------- registry, shapes, round trip


def test_every_name_is_registered() -> None:
    alternet = set(timm.list_models("alternet*"))
    assert alternet == set(ALTERNETS) | {"alternet_cifar_micro"}
    assert set(timm.list_models("resnet_cifar*")) == set(RESNETS) | {"resnet_cifar_micro"}
    cifar = set(timm.list_models("*cifar*"))
    assert set(TRANSFORMERS + MICROS + RESNETS) <= cifar
    assert {"vit_cifar_ti", "vit_cifar_s", "vit_cifar_micro", "pit_cifar_ti", "pit_cifar_micro"} <= cifar


@pytest.mark.parametrize("name", MICROS)
def test_micro_forward_backward_and_state_dict_round_trip(name: str) -> None:
    model = timm.create_model(name, num_classes=10)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 10)
    out.logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert num_params(model) < 200_000
    torch.manual_seed(1)
    other = timm.create_model(name, num_classes=10)
    other.load_state_dict(model.state_dict())
    model.eval(), other.eval()
    torch.testing.assert_close(other(x), model(x))


@pytest.mark.parametrize(
    "name", ["alternet_cifar_micro", "vit_cifar_micro", "pit_cifar_micro", "swin_cifar_micro"]
)
def test_micro_double_backward_under_math_sdpa(name: str) -> None:
    """A Hessian-vector product (double backward) runs on CPU under the math attention kernel."""
    model = timm.create_model(name, num_classes=10).eval()
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    with sdpa_kernel(SDPBackend.MATH):
        loss = nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        vec = [torch.randn_like(p) for p in params]
        hvp = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vec)), params)
    assert all(torch.isfinite(h).all() for h in hvp)
    assert sum(h.abs().sum() for h in hvp) > 0


def test_alternet_shapes_32_and_224_features_and_intermediates() -> None:
    x = torch.randn(2, 3, 32, 32)
    model = timm.create_model("alternet_cifar_micro").eval()
    assert model(x).shape == (2, 100)
    feats = timm.create_model("alternet_cifar_micro", features_only=True)(x)
    expected = [(8, 32, 32), (8, 32, 32), (16, 16, 16), (32, 8, 8), (64, 4, 4)]
    assert [tuple(f.shape[1:]) for f in feats] == expected
    final, inter = model.forward_intermediates(x)
    assert [f.shape for f in inter] == [f.shape for f in feats]
    torch.testing.assert_close(model.forward_head(final), model(x))
    big = timm.create_model("alternet_cifar_micro", stem="imagenet", num_classes=1000).eval()
    assert big.window_size == 7
    feats = big.forward_intermediates(torch.randn(1, 3, 224, 224), intermediates_only=True)
    assert [tuple(f.shape[2:]) for f in feats] == [(56, 56), (56, 56), (28, 28), (14, 14), (7, 7)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_cifar_ti", "vit_cifar_s", "pit_cifar_ti", "swin_cifar_ti"])
def test_transformer_full_size_forward_32(name: str) -> None:
    model = timm.create_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 100)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALTERNETS + RESNETS)
def test_full_size_forward(name: str) -> None:
    size = 32 if "cifar" in name else 224
    model = timm.create_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 100 if "cifar" in name else 1000)


# ----------------------------------------------------------------------------- analysis layers


def test_alternet_analysis_layers_names_kinds_order() -> None:
    taps = zoo.analysis_layers(timm.create_model("alternet_cifar_micro"))
    assert list(taps) == [
        "stem",
        "stages.0.0",
        "stages.1.0",
        "stages.2.0",
        "stages.2.1",
        "stages.3.0",
        "stages.3.1",
        "norm",
        "pool",
        "head",
    ]
    assert [t.kind for t in taps.values()] == [
        "stem",
        "conv",
        "conv",
        "conv",
        "msa",
        "conv",
        "msa",
        "norm",
        "pool",
        "head",
    ]
    model = build_meta("alternet_cifar_50")
    taps = zoo.analysis_layers(model)
    blocks = {n: t for n, t in taps.items() if n.startswith("stages.")}
    assert "".join("M" if t.kind == "msa" else "C" for t in blocks.values()) == "".join(model.layout)
    for name, tap in blocks.items():
        assert tap.module is model.get_submodule(name) and tap.branch is tap.module.residual


def test_transformer_analysis_layers_names_kinds_order() -> None:
    taps = zoo.analysis_layers(timm.create_model("vit_cifar_micro"))
    assert list(taps) == [
        "patch_embed",
        "blocks.0.attn",
        "blocks.0.mlp",
        "blocks.1.attn",
        "blocks.1.mlp",
        "norm",
        "head",
    ]
    assert [t.kind for t in taps.values()] == ["stem", "msa", "mlp", "msa", "mlp", "norm", "head"]
    assert taps["blocks.1.attn"].point == "input"
    taps = zoo.analysis_layers(timm.create_model("swin_cifar_micro"))
    assert [t.kind for t in taps.values()] == ["stem"] + ["msa", "mlp"] * 4 + ["norm", "pool", "head"]
    taps = zoo.analysis_layers(timm.create_model("vit_cifar_micro", global_pool="avg"))
    assert list(taps)[-2:] == ["fc_norm", "head"] and taps["blocks.0.attn"].kind == "msa"
    taps = zoo.analysis_layers(build_meta("pit_cifar_ti"))
    assert [t.kind for t in taps.values()] == ["stem"] + ["msa", "mlp"] * 12 + ["norm", "head"]
    for name in MICROS:
        assert all(t.kind in KINDS for t in zoo.analysis_layers(timm.create_model(name)).values())
    with pytest.raises(TypeError, match="analysis_layers"):
        zoo.analysis_layers(nn.Linear(2, 2))


@contextlib.contextmanager
def capture(model: nn.Module, tap: zoo.Tap, inputs_of: nn.Module, lesion: bool) -> Iterator[dict]:
    """Record the tap's tensor and the input of ``inputs_of``; zero ``tap.branch`` when ``lesion``."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [inputs_of.register_forward_pre_hook(lambda m, a: seen.setdefault("before", a[0]))]
    if tap.point == "input":
        hooks.append(tap.module.register_forward_pre_hook(lambda m, a: seen.setdefault("tap", a[0])))
    else:
        hooks.append(tap.module.register_forward_hook(lambda m, a, o: seen.setdefault("tap", o)))
    if lesion:
        hooks.append(tap.branch.register_forward_hook(lambda m, a, o: torch.zeros_like(o)))
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("name", MICROS)
def test_lesion_turns_each_block_into_its_shortcut(name: str) -> None:
    """Zeroing a tap's branch makes the tapped state equal the state before that residual step."""
    model = timm.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    checked = 0
    for tap in zoo.analysis_layers(model).values():
        if tap.branch is None:
            continue
        if tap.kind == "mlp":  # before the MLP step: the attention-step state = input of the block's norm2
            before_of = tap.module.norm2
        elif tap.kind == "msa" and tap.point == "input":  # transformer attention step: the block input
            before_of = next(m for m in model.modules() if getattr(m, "norm2", None) is tap.module)
        else:  # AlterNet block
            before_of = tap.module
        with torch.no_grad(), capture(model, tap, before_of, lesion=True) as seen:
            model(x)
        got, before = seen["tap"], seen["before"]
        if isinstance(before_of, PreActBlock) and before_of.shortcut is not None:
            with torch.no_grad():
                before = before_of.shortcut(before_of.act(before_of.norm(before)))
        torch.testing.assert_close(got.reshape(before.shape), before)
        with torch.no_grad(), capture(model, tap, before_of, lesion=False) as seen:
            model(x)
        assert not torch.allclose(seen["tap"].reshape(before.shape), before)
        checked += 1
    assert checked >= 4


def test_postact_resnet_baseline() -> None:
    """The paper's ResNet baseline: post-activation blocks, BN-ReLU stem, GAP-Linear head."""
    model = timm.create_model("resnet_cifar_micro", block_style="postact", num_classes=10).eval()
    assert isinstance(model.stem.norm, nn.BatchNorm2d) and isinstance(model.norm, nn.Identity)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    taps = zoo.analysis_layers(model)
    assert "norm" not in taps and [t.kind for t in taps.values()].count("conv") == 6


def test_vit_gap_has_no_class_token_and_token_has_one() -> None:
    x = torch.randn(2, 3, 32, 32)
    gap = timm.create_model("vit_cifar_micro", global_pool="avg").eval()
    tok = timm.create_model("vit_cifar_micro").eval()
    assert gap.cls_token is None and gap.global_pool == "avg"
    assert tok.cls_token is not None and tok.global_pool == "token"
    assert gap(x).shape == tok(x).shape == (2, 100)
