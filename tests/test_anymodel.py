"""Analyses on models that have no `analysis_layers()`: timm ResNet / ViT / Swin / ConvNeXt,
torchvision's ResNet and a user `nn.Module` of blocks.

Each model's points are checked against a hand-written list (one per block, the right kind), and the
Fourier / variance values against an independent computation: the features come from running the
blocks by hand (as the authors' notebook cuts timm's models into blocks) and the authors' formulas
are written out again here, not imported.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

from alternet_pl.analysis import fourier, lesion, variance
from alternet_pl.analysis.layers import LayerOptions, model_layers, select_taps
from alternet_pl.errors import InputError

# ---- the authors' definitions, written out again ----------------------------------------------


def tokens_to_map(z: torch.Tensor) -> torch.Tensor:
    if z.ndim == 3:
        n = z.shape[1]
        if math.isqrt(n) ** 2 != n:
            z = z[:, 1:]  # CLS token
        side = math.isqrt(z.shape[1])
        z = z.reshape(z.shape[0], side, side, z.shape[2]).permute(0, 3, 1, 2)
    return z.double()


def authors_fourier(z: torch.Tensor) -> np.ndarray:
    z = tokens_to_map(z)
    h = z.shape[-1]
    f = torch.log(torch.fft.fft2(z).abs() + 1e-6)
    f = torch.roll(f, shifts=(int(h / 2), int(h / 2)), dims=(2, 3)).mean(dim=(0, 1))
    diag = f.diag()[int(h / 2) :]
    return (diag - diag[0]).numpy()


def authors_variance(z: torch.Tensor) -> float:
    z = tokens_to_map(z)
    return float(z.reshape(z.shape[0], z.shape[1], -1).var(dim=-1).mean())


# ---- the features, block by block, by hand ----------------------------------------------------


def resnet_features(m, x):
    x = m.maxpool(m.act1(m.bn1(m.conv1(x)))) if hasattr(m, "act1") else m.maxpool(m.relu(m.bn1(m.conv1(x))))
    out = {"stem": x}
    for s in range(1, 5):
        for j, blk in enumerate(getattr(m, f"layer{s}")):
            x = blk(x)
            out[f"layer{s}.{j}"] = x
    return out


def vit_features(m, x):
    x = m.patch_embed(x)
    x = m.pos_drop(torch.cat([m.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + m.pos_embed)
    out = {"stem": x}
    for i, blk in enumerate(m.blocks):
        x = x + blk.attn(blk.norm1(x))
        out[f"blocks.{i}.attn"] = x
        x = x + blk.mlp(blk.norm2(x))
        out[f"blocks.{i}.mlp"] = x
    return out


def swin_features(m, x):
    x = m.patch_embed(x)
    out = {}
    for s, stage in enumerate(m.layers):
        x = stage.downsample(x)
        for i, blk in enumerate(stage.blocks):
            if not out:
                out["stem"] = x.permute(0, 3, 1, 2)
            b, h, w, c = x.shape
            x = x + blk._attn(blk.norm1(x))
            out[f"layers.{s}.blocks.{i}.attn"] = x.permute(0, 3, 1, 2)
            x = x + blk.mlp(blk.norm2(x.reshape(b, -1, c))).reshape(b, h, w, c)
            out[f"layers.{s}.blocks.{i}.mlp"] = x.permute(0, 3, 1, 2)
    return out


def convnext_features(m, x):
    x = m.stem(x)
    out = {}
    for s, stage in enumerate(m.stages):
        x = stage.downsample(x)
        for i, blk in enumerate(stage.blocks):
            out.setdefault("stem", x)
            x = blk(x)
            out[f"stages.{s}.blocks.{i}"] = x
    return out


class ConvBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())

    def forward(self, x):
        return x + self.branch(x)


class AttnBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.attn = nn.MultiheadAttention(c, 2, batch_first=True)

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.norm(x.flatten(2).transpose(1, 2))
        return x + self.attn(t, t, t)[0].transpose(1, 2).reshape(b, c, h, w)


class PlainBlock(nn.Module):
    """No residual path: a lesion must skip it."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.conv(x))


class UserNet(nn.Module):
    def __init__(self, c: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, stride=2, padding=1)
        self.stage = nn.Sequential(ConvBlock(c), AttnBlock(c), PlainBlock(c))
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        return self.head(self.stage(self.stem(x)).mean(dim=(2, 3)))


def user_features(m, x):
    x = m.stem(x)
    out = {"stem": x}
    for j, blk in enumerate(m.stage):
        x = blk(x)
        out[f"stage.{j}"] = x
    return out


def blocks(kind: str, n: int) -> list[str]:
    return [kind] * n


#: name -> (builder, image side, hand-made features, expected kinds after the stem)
MODELS = {
    "timm_resnet18": (
        lambda: timm.create_model("resnet18", num_classes=10),
        64,
        resnet_features,
        blocks("conv", 8),
    ),
    "timm_vit_tiny": (
        lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10),
        32,
        vit_features,
        ["msa", "mlp"] * 12,
    ),
    "timm_swin_tiny": (
        lambda: timm.create_model("swin_tiny_patch4_window7_224", img_size=56, num_classes=10),
        56,
        swin_features,
        ["msa", "mlp"] * 12,
    ),
    "timm_convnext_atto": (
        lambda: timm.create_model("convnext_atto", num_classes=10),
        64,
        convnext_features,
        blocks("conv", 12),
    ),
    "tv_resnet18": (
        lambda: torchvision.models.resnet18(num_classes=10),
        64,
        resnet_features,
        blocks("conv", 8),
    ),
    "user_blocks": (lambda: UserNet(), 16, user_features, ["conv", "msa", "conv"]),
}
SLOW = {"timm_swin_tiny", "timm_convnext_atto", "tv_resnet18"}


def wake(model: nn.Module) -> nn.Module:
    """Random norm scales and layer-scale gammas: timm starts ResNet's last BN of each block at 0 and
    ConvNeXt's gamma at 1e-6, which would make every block the identity and hide a wrong point."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or (name.endswith("weight") and p.ndim == 1):
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=g))
    return model


def _cases():
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in MODELS]


def _batches(side: int, n: int = 2, size: int = 3, classes: int = 10):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(size, 3, side, side, generator=g), torch.randint(0, classes, (size,), generator=g))
        for _ in range(n)
    ]


def check_points_and_values(model, data, by_hand, kinds):
    """Assert the model's points and kinds, and its Fourier curves and variances, equal the authors'
    definitions on the features `by_hand(model, x)` computes; returns the variance record."""
    with torch.no_grad():
        feats = [by_hand(model, x) for x, _ in data]
    names = list(feats[0])
    taps = model_layers(model)
    assert list(taps) == names
    assert [t.kind for t in taps.values()] == ["stem", *kinds]

    record = fourier.run(model, None, data, fourier.FourierOptions())
    assert record.layers == names and record.kinds == ["stem", *kinds]
    for i, n in enumerate(names):
        ref = authors_fourier(torch.cat([f[n] for f in feats]))
        np.testing.assert_allclose(record.curves[i], ref, rtol=1e-5, atol=1e-5)
    vrec = variance.run(model, None, data, variance.VarianceOptions())
    ref_var = [authors_variance(torch.cat([f[n] for f in feats])) for n in names]
    np.testing.assert_allclose(vrec.variance, ref_var, rtol=1e-5)
    return vrec


@pytest.mark.parametrize("name", _cases())
def test_points_kinds_and_values_match_the_authors_definitions(name):
    torch.manual_seed(0)
    build, side, by_hand, kinds = MODELS[name]
    model = wake(build()).eval()
    vrec = check_points_and_values(
        model, _batches(side, classes=5 if name == "user_blocks" else 10), by_hand, kinds
    )
    assert vrec.depth[0] == 0.0 and vrec.depth[-1] == 1.0


def test_lesion_zeroes_the_residual_branch_of_timm_and_torchvision_resnets():
    torch.manual_seed(0)
    for model in (timm.create_model("resnet18", num_classes=10), torchvision.models.resnet18(num_classes=10)):
        wake(model).eval()
        x = torch.randn(2, 3, 32, 32)
        tap = select_taps(model, ["layer2.0"], need_branch=True)["layer2.0"]
        with torch.no_grad(), lesion.lesioned(tap):
            got = model(x)
            feats = resnet_features(model, x)["layer1.1"]
            blk = model.layer2[0]
            act = blk.act2 if hasattr(blk, "act2") else blk.relu
            y = act(blk.downsample(feats))  # the block as its shortcut
            for later in [*model.layer2[1:], *model.layer3, *model.layer4]:
                y = later(y)
            ref = model.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))
        torch.testing.assert_close(got, ref)


def test_lesion_on_user_blocks_skips_the_block_without_a_residual_path():
    torch.manual_seed(0)
    model = UserNet().eval()
    data = _batches(16, classes=5)
    record = lesion.run(model, None, data, lesion.LesionOptions())
    assert record.layers == ["stage.0", "stage.1"] and record.kinds == ["conv", "msa"]
    assert record.skipped == ["stage.2: no residual path found"]
    with torch.no_grad():  # stage.1 lesioned by hand: the attention block is the identity
        x = torch.cat([x for x, _ in data])
        y = torch.cat([y for _, y in data])
        h = model.stage[2](model.stage[0](model.stem(x)))
        acc = float((model.head(h.mean(dim=(2, 3))).argmax(-1) == y).double().mean())
    assert record.acc[1] == pytest.approx(acc)


def test_lesion_on_vit_drops_attention_and_mlp_steps():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10, depth=2).eval()
    record = lesion.run(model, None, _batches(32, n=1), lesion.LesionOptions())
    assert record.layers == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]
    assert record.kinds == ["msa", "mlp", "msa", "mlp"] and record.skipped == []


def test_overrides_patterns_modules_and_kinds():
    model = UserNet()
    taps = select_taps(model, ["stage.*"])
    assert list(taps) == ["stage.0", "stage.1", "stage.2"]
    taps = select_taps(model, ["stage.1.norm", "stem", "stage.0"])  # a module that is no point, in order
    assert list(taps) == ["stem", "stage.0", "stage.1.norm"]
    opts = LayerOptions(kinds={"stage.2": "attention", "stage.0": "other"})
    assert [t.kind for t in opts.select(model).values()] == ["stem", "other", "msa", "msa"]
    assert list(LayerOptions(kinds=("msa",)).select(model)) == ["stage.1"]
    with pytest.raises(InputError, match="match no point or module"):
        select_taps(model, ["stage.9"])
    with pytest.raises(InputError, match="kind 'blob' not understood"):
        LayerOptions(kinds={"stage.*": "blob"})


def test_analyses_that_cannot_apply_fail_in_one_line_before_work():
    model = UserNet().eval()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    data = _batches(16, n=3, classes=5)
    with pytest.raises(InputError) as err:  # the head's (B, classes) output has no spatial map
        fourier.run(model, None, data, fourier.FourierOptions(layers=("head",)))
    assert "\n" not in str(err.value) and "head" in str(err.value) and not calls  # the probe stopped it
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(PlainBlock(4), PlainBlock(4)))
    with pytest.raises(InputError, match="no block of Sequential has a residual path to drop"):
        lesion.run(plain, None, data, lesion.LesionOptions())
    with pytest.raises(InputError, match=r"layer\(s\) \{'stage.2'"):
        lesion.run(UserNet(), None, data, lesion.LesionOptions(layers=("stage.*",)))
    with pytest.raises(InputError, match="found no blocks in Linear"):
        variance.run(nn.Linear(3, 3), None, data, variance.VarianceOptions())


def test_lesion_callback_checks_its_layers_before_training():
    from alternet_pl.callbacks import LesionCallback

    with pytest.raises(InputError, match="LesionCallback: found no blocks in Linear"):
        LesionCallback().setup(None, nn.Linear(3, 3), "fit")
    with pytest.raises(InputError, match=r"LesionCallback: lesion: layer\(s\) \['stem'\] are not blocks"):
        LesionCallback(layers=["stem"]).setup(None, UserNet(), "fit")
    with pytest.raises(InputError, match="LesionCallback: layer.*stage.9.*match no point"):
        LesionCallback(layers=["stage.9"]).setup(None, UserNet(), "fit")
    LesionCallback().setup(None, UserNet(), "fit")


def test_lesion_record_without_skipped_still_reads(tmp_path):
    import json

    from alternet_pl.analysis.records import LesionRecord

    record = LesionRecord(
        layers=["a"], kinds=["conv"], depth=[0.0], clean_acc=0.5, acc=[0.4], drop=[0.1], skipped=["b: why"]
    )
    path = record.to_files(tmp_path, "epoch=001")["json"]
    assert LesionRecord.from_files(path).skipped == ["b: why"]
    doc = json.loads(path.read_text())
    del doc["skipped"]  # written before the field existed
    path.write_text(json.dumps(doc))
    assert LesionRecord.from_files(path).skipped == []
