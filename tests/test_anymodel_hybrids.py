"""Analyses on more models without `analysis_layers()`: timm EfficientNet, RegNet, MobileViT, CoAtNet
and MaxViT, and torchvision's VisionTransformer (randomly initialised, small inputs).

As in `test_anymodel`: each model's points are a hand-written list (one per block, the right kind),
and the Fourier / variance values equal the authors' formulas on features computed by running the
blocks by hand. Then the lesion (which blocks have a shortcut, checked by hand) and the block-wise
Hessian (against a dense float64 Hessian of one block's parameters).
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from alternet_pl import analyze_model
from alternet_pl.analysis import lesion
from alternet_pl.analysis.layers import select_taps
from alternet_pl.errors import InputError
from tests.test_anymodel import _batches, check_points_and_values, wake

# ---- the features, block by block, by hand ----------------------------------------------------


def efficientnet_features(m, x):
    x = m.bn1(m.conv_stem(x))
    out = {"stem": x}
    for s, stage in enumerate(m.blocks):
        for j, blk in enumerate(stage):
            x = blk(x)
            out[f"blocks.{s}.{j}"] = x
    return out


def regnet_features(m, x):
    x = m.stem(x)
    out = {"stem": x}
    for s in range(1, 5):
        for j, blk in enumerate(getattr(m, f"s{s}").children()):
            x = blk(x)
            out[f"s{s}.b{j + 1}"] = x
    return out


def mobilevit_features(m, x):
    x = m.stem(x)
    out = {"stem": x}
    for s, stage in enumerate(m.stages):
        for j, blk in enumerate(stage):
            x = blk(x)  # a MobileVitBlock is one point: its transformer runs on unfolded patches
            out[f"stages.{s}.{j}"] = x
    return out


def coatnet_features(m, x):
    x = m.stem(x)
    out = {"stem": x}
    for s, stage in enumerate(m.stages):
        for i, blk in enumerate(stage.blocks):
            name = f"stages.{s}.blocks.{i}"
            if type(blk).__name__ == "TransformerBlock2d":  # after attention, then after the MLP
                x = blk.shortcut(x) + blk.attn(blk.norm1(x))
                out[f"{name}.attn"] = x
                x = x + blk.mlp(blk.norm2(x))
                out[f"{name}.mlp"] = x
            else:
                x = blk(x)
                out[name] = x
    return out


def maxvit_features(m, x):
    x = m.stem(x)
    out = {"stem": x}
    for s, stage in enumerate(m.stages):
        for i, blk in enumerate(stage.blocks):
            x = blk(x)  # MBConv, block attention and grid attention: one hybrid block, one point
            out[f"stages.{s}.blocks.{i}"] = x
    return out


def tv_vit_features(m, x):
    x = m._process_input(x)
    x = torch.cat([m.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = m.encoder.dropout(x + m.encoder.pos_embedding)
    out = {"stem": x}
    for i, blk in enumerate(m.encoder.layers):
        a = blk.ln_1(x)
        x = x + blk.self_attention(a, a, a, need_weights=False)[0]
        out[f"encoder.layers.encoder_layer_{i}.attn"] = x
        x = x + blk.mlp(blk.ln_2(x))
        out[f"encoder.layers.encoder_layer_{i}.mlp"] = x
    return out


def tv_vit(layers: int = 2, dim: int = 32, side: int = 32) -> nn.Module:
    return torchvision.models.VisionTransformer(
        image_size=side,
        patch_size=8,
        num_layers=layers,
        num_heads=2,
        hidden_dim=dim,
        mlp_dim=2 * dim,
        num_classes=10,
    )


#: name -> (builder, image side, hand-made features, expected kinds after the stem)
MODELS = {
    "timm_test_efficientnet": (
        lambda: timm.create_model("test_efficientnet", num_classes=10),
        64,
        efficientnet_features,
        ["conv"] * 5,
    ),
    "timm_regnetx_002": (
        lambda: timm.create_model("regnetx_002", num_classes=10),
        64,
        regnet_features,
        ["conv"] * 13,  # depths 1, 1, 4, 7: RegStage is no Sequential, its b1, b2, ... are the blocks
    ),
    "timm_mobilevit_xxs": (
        lambda: timm.create_model("mobilevit_xxs", num_classes=10),
        64,
        mobilevit_features,
        ["conv", "conv", "conv", "conv", "conv", "msa", "conv", "msa", "conv", "msa"],
    ),
    "timm_test_coatnet": (
        lambda: timm.create_model("test_coatnet", num_classes=10, img_size=64),
        64,
        coatnet_features,
        ["conv", "conv", "msa", "mlp", "msa", "mlp", "msa", "mlp"],  # stages 2 and 3 are attention
    ),
    "timm_test_maxvit": (
        lambda: timm.create_model("test_maxvit", num_classes=10, img_size=64),
        64,
        maxvit_features,
        ["msa"] * 4,
    ),
    "tv_vit": (tv_vit, 32, tv_vit_features, ["msa", "mlp", "msa", "mlp"]),
}
SLOW = {"timm_regnetx_002", "timm_mobilevit_xxs"}
REGNET_POINTS = ["s1.b1", "s2.b1", *(f"s3.b{i}" for i in range(1, 5)), *(f"s4.b{i}" for i in range(1, 8))]


def _cases():
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in MODELS]


@pytest.mark.parametrize("name", _cases())
def test_points_kinds_and_values_match_the_authors_definitions(name):
    torch.manual_seed(0)
    build, side, by_hand, kinds = MODELS[name]
    model = wake(build()).eval()
    check_points_and_values(model, _batches(side), by_hand, kinds)


def _skipping(model: nn.Module, dropped: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits with block ``dropped`` replaced by the identity (forward pre/post by hand)."""
    handle = dropped.register_forward_hook(lambda mod, args, out: args[0])
    try:
        return model(x)
    finally:
        handle.remove()


def test_lesion_on_mobilevit_drops_identity_shortcut_blocks_and_skips_the_others():
    torch.manual_seed(0)
    model = wake(timm.create_model("mobilevit_xxs", num_classes=10)).eval()
    data = _batches(64, n=1, size=2)
    record = lesion.run(model, None, data, lesion.LesionOptions())
    assert record.layers == ["stages.0.0", "stages.1.1", "stages.1.2"] and record.kinds == ["conv"] * 3
    no_shortcut = ["stages.1.0", "stages.2.0", "stages.3.0", "stages.4.0"]  # shortcut=None (stride 2)
    mobilevit_blocks = ["stages.2.1", "stages.3.1", "stages.4.1"]  # conv_fusion(cat(x, f(x))): no shortcut
    assert record.skipped == [f"{n}: no residual path found" for n in sorted(no_shortcut + mobilevit_blocks)]
    x = data[0][0]
    tap = select_taps(model, ["stages.1.1"], need_branch=True)["stages.1.1"]
    with torch.no_grad(), lesion.lesioned(tap):
        got = model(x)
    with torch.no_grad():
        ref = _skipping(model, model.stages[1][1], x)
    torch.testing.assert_close(got, ref)
    with pytest.raises(InputError, match=r"layer\(s\) \['stages.1.0'\] have no residual branch"):
        select_taps(model, ["stages.1.0"], need_branch=True)


def test_lesion_on_regnet_without_downsample_shortcuts_skips_the_first_blocks():
    """RegNet with ``downsample=""``: a stage's first block (new width, stride 2) has no shortcut, and
    its ``drop_path`` is then never run; the probe sees that and skips it. The other blocks keep their
    identity shortcut, and a lesion makes them the identity (checked by hand on ``s3.b2``)."""
    torch.manual_seed(0)
    model = wake(timm.create_model("regnetx_002", num_classes=10, downsample="")).eval()
    data = _batches(64, n=1, size=2)
    record = lesion.run(model, None, data, lesion.LesionOptions())
    firsts = ["s1.b1", "s2.b1", "s3.b1", "s4.b1"]
    assert record.skipped == [f"{n}: its residual branch is not run by the forward pass" for n in firsts]
    assert record.layers == [n for n in REGNET_POINTS if n not in firsts]
    x = data[0][0]
    tap = select_taps(model, ["s3.b2"], need_branch=True)["s3.b2"]
    with torch.no_grad(), lesion.lesioned(tap):
        got = model(x)
    with torch.no_grad():
        ref = _skipping(model, model.s3.b2, x)  # relu(0 + x) = x: the input of s3.b2 is a ReLU output
    torch.testing.assert_close(got, ref)


class DropPathOnly(nn.Module):
    """A block with a timm-style ``drop_path`` slot but no shortcut: zeroing it leaves a constant."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.drop_path = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.drop_path(self.conv(x)) + 0.5)


def test_lesion_skips_a_block_whose_drop_path_is_its_whole_output():
    from tests.test_anymodel import ConvBlock

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(ConvBlock(4), DropPathOnly(4)))
    data = _batches(16, n=1, classes=4)
    model = nn.Sequential(*model, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    record = lesion.run(model, None, data, lesion.LesionOptions())
    assert record.layers == ["1.0"]
    assert record.skipped == ["1.1: no shortcut: its output ignores its input once its branch is zeroed"]
    with pytest.raises(InputError, match=r"1.1.*no shortcut"):
        lesion.run(model, None, data, lesion.LesionOptions(layers=("1.1",)))


def test_lesion_on_an_efficientnet_without_skips_fails_in_one_line():
    model = timm.create_model("test_efficientnet", num_classes=10).eval()
    with pytest.raises(InputError) as err:
        lesion.run(model, None, _batches(64, n=1), lesion.LesionOptions())
    assert "no block of EfficientNet has a residual path to drop" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_blockwise_hessian_on_torchvision_vit_matches_a_dense_block_hessian():
    from alternet_pl.callbacks.options import DensityOptions, EigenOptions, TraceOptions

    torch.manual_seed(0)
    model = tv_vit(layers=1, dim=8, side=16).double()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, 16, 16, generator=g).double(), torch.randint(0, 10, (6,), generator=g)
    spec = {
        "eigen": EigenOptions(k=1, bottom=False),
        "trace": TraceOptions(samples=0),
        "density": DensityOptions(enabled=False),
        "blockwise": True,
        "dtype": "float64",
    }
    hess = analyze_model(model, [(x, y)], analyses=[("hessian", spec)])["hessian"]
    blk = model.encoder.layers[0]
    assert hess.block_names == ["encoder.layers.encoder_layer_0.attn", "encoder.layers.encoder_layer_0.mlp"]
    assert hess.block_kinds == ["msa", "mlp"]
    model.eval()
    for i, parts in enumerate([(blk.ln_1, blk.self_attention), (blk.ln_2, blk.mlp)]):
        named = {
            n: p for n, p in model.named_parameters() if any(p is q for m in parts for q in m.parameters())
        }
        shapes, sizes = {n: p.shape for n, p in named.items()}, [p.numel() for p in named.values()]

        def loss(flat, named=named, shapes=shapes, sizes=sizes):
            chunks = {n: c.reshape(shapes[n]) for n, c in zip(named, torch.split(flat, sizes))}
            return nn.functional.cross_entropy(torch.func.functional_call(model, chunks, (x,)), y)

        flat = torch.cat([p.detach().reshape(-1) for p in named.values()])
        with sdpa_kernel(SDPBackend.MATH):  # the fused CPU kernel has no double backward
            dense = torch.autograd.functional.hessian(loss, flat)
        assert hess.block_top_eig[i] == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-4)


@pytest.mark.slow
def test_lesion_on_efficientnet_b0_drops_the_blocks_timm_marks_with_a_skip():
    torch.manual_seed(0)
    model = wake(timm.create_model("efficientnet_b0", num_classes=10)).eval()
    data = _batches(64, n=1, size=2)
    record = lesion.run(model, None, data, lesion.LesionOptions())
    with_skip = ["blocks.1.1", "blocks.2.1", "blocks.3.1", "blocks.3.2", "blocks.4.1", "blocks.4.2"]
    with_skip += ["blocks.5.1", "blocks.5.2", "blocks.5.3"]
    assert record.layers == with_skip  # has_skip: same width, stride 1
    firsts = ["blocks.0.0", *(f"blocks.{s}.0" for s in range(1, 7))]
    assert record.skipped == [f"{n}: no residual path found" for n in firsts]
    x = data[0][0]
    tap = select_taps(model, ["blocks.3.1"], need_branch=True)["blocks.3.1"]
    with torch.no_grad(), lesion.lesioned(tap):
        got = model(x)
    with torch.no_grad():
        ref = _skipping(model, model.blocks[3][1], x)  # no activation after the sum: the identity
    torch.testing.assert_close(got, ref)
