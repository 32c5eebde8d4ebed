"""Fourier analysis, the frequency-mask helper and the feature collector, against independent references."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from alternet_pl.analysis import fourier, freq, lesion, robustness, variance
from alternet_pl.analysis.features import as_feature_map, collect_features, select_taps
from alternet_pl.errors import InputError
from alternet_pl.models.taps import Tap
from tests.distributed import run_distributed


# ---- small models defined here ---------------------------------------------------------------------
class TinyViT(VisionTransformer):
    """timm ViT with the two taps per block the real models use."""

    def analysis_layers(self):
        taps = OrderedDict(patch_embed=Tap(self.patch_embed, "stem"))
        for i, b in enumerate(self.blocks):
            taps[f"blocks.{i}.attn"] = Tap(b.norm2, "msa", point="input", branch=b.drop_path1)
            taps[f"blocks.{i}.mlp"] = Tap(b, "mlp", branch=b.drop_path2)
        taps["head"] = Tap(self.head, "head")
        return taps


def tiny_vit(seed: int = 0) -> TinyViT:
    torch.manual_seed(seed)
    return TinyViT(img_size=8, patch_size=2, embed_dim=16, depth=1, num_heads=2, num_classes=3)


class Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.residual(x)


class TinyCNN(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.b1, self.b2 = Res(4), Res(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.b2(self.b1(self.stem(x))).mean(dim=(2, 3)))

    def analysis_layers(self):
        return OrderedDict(
            stem=Tap(self.stem, "stem"),
            b1=Tap(self.b1, "conv", branch=self.b1.residual),
            b2=Tap(self.b2, "conv", branch=self.b2.residual),
            head=Tap(self.fc, "head"),
        )


def batches(n=3, bs=(5, 4, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, 3, 8, 8, generator=g), torch.randint(0, 3, (b,), generator=g)) for b in bs[:n]]


# ---- band mask and band noise -------------------------------------------------------------------------
def loop_mask(n: int, f: float, s: float) -> np.ndarray:
    """The official rule written out by loops: centred square of side 2*floor((f+s)n/2pi), clipped,
    minus the one of side 2*floor((f-s)n/2pi)."""

    def half(v):
        return min(max(math.floor(v * n / (2 * math.pi)), 0), n // 2)

    c, ro, ri = n // 2, half(f + s), half(f - s)
    m = np.zeros((n, n), bool)
    for i in range(n):
        for j in range(n):
            in_outer = c - ro <= i < c + ro and c - ro <= j < c + ro
            in_inner = c - ri <= i < c + ri and c - ri <= j < c + ri
            m[i, j] = in_outer and not in_inner
    return m


@pytest.mark.parametrize("n", [8, 16, 32, 7])
@pytest.mark.parametrize("f_pi", [0.1, 0.3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("s", [0.2, 0.5])
def test_band_mask_matches_loops(n, f_pi, s):
    got = freq.band_mask(n, f_pi * math.pi, s).numpy()
    np.testing.assert_array_equal(got, loop_mask(n, f_pi * math.pi, s))


def test_band_mask_known_rings_at_32():
    # 0.9 pi with s = 0.2 rad at n = 32: outer half-side floor(15.41) = 15, inner floor(13.38) = 13
    m = freq.band_mask(32, 0.9 * math.pi, 0.2)
    assert m.sum() == 30 * 30 - 26 * 26
    assert not m[16, 16] and m[1, 1] and not m[0, 0]


@pytest.mark.parametrize("f_pi", [0.1, 0.5, 0.9])
def test_band_noise_energy_inside_band(f_pi):
    f = f_pi * math.pi
    noise = freq.band_noise((4, 3, 32, 32), f, 0.2, eps=0.1, generator=torch.Generator().manual_seed(0))
    spec = np.fft.fftshift(np.fft.fft2(noise.double().numpy()), axes=(-2, -1))
    m = loop_mask(32, f, 0.2)
    # the real part adds the mask's point reflection through frequency 0 (index 16)
    refl = np.zeros_like(m)
    for i in range(32):
        for j in range(32):
            if m[i, j]:
                refl[(32 - i) % 32, (32 - j) % 32] = True
    band = m | refl
    energy = np.abs(spec) ** 2
    assert energy[..., band].sum() > 1.0
    assert energy[..., ~band].sum() < 1e-10 * energy.sum()


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.2, float("nan")])
def test_frequency_outside_range_raises(bad):
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        freq.check_freq(bad)
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        robustness.frequency_noise_accuracy(TinyCNN(), batches(1), [0.5, bad], eps=0.1, width=0.2)


# ---- delta log amplitude ----------------------------------------------------------------------------
def numpy_reference(z: np.ndarray) -> np.ndarray:
    a = np.log(np.abs(np.fft.fftshift(np.fft.fft2(z), axes=(-2, -1))) + 1e-6).mean(axis=(0, 1))
    diag = np.diag(a)[int(a.shape[0] / 2) :]  # the official code's slice
    return diag - diag[0]


def test_matches_numpy_reference():
    z = torch.randn(3, 5, 16, 16, generator=torch.Generator().manual_seed(1))
    got = fourier.delta_log_amplitude({"x": z})["x"]
    assert got.shape == (8,)
    np.testing.assert_allclose(got.numpy(), numpy_reference(z.double().numpy()), atol=1e-10)
    z7 = torch.randn(2, 3, 7, 7)
    assert fourier.delta_log_amplitude({"x": z7})["x"].shape == (4,)  # odd side keeps the corner
    np.testing.assert_allclose(
        fourier.delta_log_amplitude({"x": z7})["x"].numpy(), numpy_reference(z7.double().numpy()), atol=1e-10
    )


def test_white_noise_is_flat():
    """White noise: E log|X| is the same at every complex frequency; the DC bin is real, which puts it
    (log 2) / 2 below (E log|N(0,1)| = -(gamma + log 2)/2 vs E log|CN(0,1)| = -gamma/2)."""
    z = torch.randn(256, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    curve = fourier.delta_log_amplitude({"x": z})["x"].numpy()
    level = math.log(2) / 2
    assert abs(curve[-1] - level) < 0.03
    assert np.abs(curve[1:] - level).max() < 0.05  # flat
    assert abs(curve[-1] - curve[len(curve) // 2]) < 0.03


def _filter(z: torch.Tensor, gain) -> torch.Tensor:
    n = z.shape[-1]
    k = torch.fft.fftfreq(n) * 2 * math.pi  # radians per pixel
    r = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2) / (math.pi * math.sqrt(2))  # 0 .. 1
    return torch.fft.ifft2(torch.fft.fft2(z) * gain(r)).real


def test_low_pass_negative_high_pass_positive():
    z = torch.randn(64, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    low = _filter(z, lambda r: torch.exp(-((r / 0.2) ** 2)))
    high = _filter(z, lambda r: 0.1 + r)
    curves = fourier.delta_log_amplitude({"low": low, "high": high, "white": z})
    assert curves["low"][-1] < -5  # gain e^{-(0.7/0.2)^2} ~ 5e-6 at the corner-ward end
    assert curves["high"][-1] > 1.5  # gain 0.1 -> ~0.7: log 7 ~ 1.9, plus the DC offset
    assert curves["low"][-1] < curves["white"][-1] < curves["high"][-1]


def test_tokens_with_and_without_cls_equal_feature_map():
    fmap = torch.randn(4, 6, 8, 8, generator=torch.Generator().manual_seed(3))
    tokens = fmap.flatten(2).transpose(1, 2)  # (B, 64, D), row-major
    with_cls = torch.cat([torch.randn(4, 1, 6), tokens], dim=1)
    c = fourier.delta_log_amplitude({"map": fmap, "tok": tokens, "cls": with_cls})
    torch.testing.assert_close(c["tok"], c["map"], rtol=0, atol=1e-12)
    torch.testing.assert_close(c["cls"], c["map"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 15, 4), (2, 8), (2, 3, 4, 4, 4), (2, 3, 4, 6), (2, 3, 1, 1)])
def test_bad_feature_shapes_raise(shape):
    with pytest.raises(ValueError, match="exclude this layer"):
        fourier.delta_log_amplitude({"bad": torch.randn(shape)})


def test_as_feature_map_token_order():
    fmap = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    tokens = torch.stack([fmap[:, :, i, j] for i in range(4) for j in range(4)], dim=1)  # explicit loop
    torch.testing.assert_close(as_feature_map(tokens), fmap)


# ---- collector ------------------------------------------------------------------------------------------
def test_collector_vit_attention_and_mlp_steps():
    model = tiny_vit()
    x = torch.randn(2, 3, 8, 8)
    feats = collect_features(model, x)
    assert list(feats) == ["patch_embed", "blocks.0.attn", "blocks.0.mlp", "head"]
    with torch.no_grad():
        model.eval()
        t = model.patch_embed(x)
        t = model._pos_embed(t)
        blk = model.blocks[0]
        after_attn = t + blk.attn(blk.norm1(t))
        after_mlp = after_attn + blk.mlp(blk.norm2(after_attn))
    torch.testing.assert_close(feats["blocks.0.attn"], after_attn)
    torch.testing.assert_close(feats["blocks.0.mlp"], after_mlp)
    assert feats["blocks.0.attn"].shape == (2, 17, 16)  # CLS + 4x4 tokens
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_unknown_layer_and_model_without_blocks_raise():
    with pytest.raises(ValueError, match="choose from"):
        select_taps(TinyCNN(), names=["b3"])
    with pytest.raises(InputError, match="found no blocks in Linear"):  # nothing to discover
        select_taps(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="exclude this layer"):  # the head output is not a feature map
        fourier.model_delta_log_amplitude(TinyCNN(), batches(1), kinds=None)


def test_hooks_removed_when_forward_raises():
    model = TinyCNN()
    with pytest.raises(RuntimeError):
        collect_features(model, torch.randn(2, 5, 8, 8))  # wrong channel count
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_streaming_equals_concatenated_features_and_restores_model():
    model = TinyCNN()
    model.train()
    data = batches()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    streamed = fourier.model_delta_log_amplitude(model, data)
    feats = collect_features(model, torch.cat([x for x, _ in data]), kinds=fourier.DEFAULT_KINDS)
    whole = fourier.delta_log_amplitude(feats)
    for name in whole:
        torch.testing.assert_close(streamed[name], whole[name], rtol=0, atol=1e-12)
    v = variance.model_feature_map_variance(model, data)
    for name, val in variance.feature_map_variance(feats).items():
        assert v[name] == pytest.approx(val, rel=1e-12)
    assert model.training and all(m.training for m in model.modules())
    for k, t in model.state_dict().items():
        assert torch.equal(t, before[k]), k  # BN running stats untouched (eval mode inside)


def test_micro_models_collector_shapes():
    import timm

    import alternet_pl.models  # noqa: F401

    alter = timm.create_model("alternet_cifar_micro", num_classes=10)
    vit = timm.create_model("vit_cifar_micro", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    fa = collect_features(alter, x, kinds=fourier.DEFAULT_KINDS)
    kinds = {n: t.kind for n, t in alter.analysis_layers().items()}
    assert {kinds[n] for n in fa} >= {"conv", "msa"}
    assert all(f.ndim == 4 and f.shape[0] == 2 for f in fa.values())
    fv = collect_features(vit, x, kinds=fourier.DEFAULT_KINDS)
    assert any(n.endswith(".attn") for n in fv) and any(n.endswith(".mlp") for n in fv)
    for name, curve in fourier.delta_log_amplitude(fv).items():
        side = as_feature_map(fv[name]).shape[-1]
        assert curve.shape == (side // 2,) and curve[0] == 0 and torch.isfinite(curve).all()
    swin = timm.create_model("swin_cifar_micro", num_classes=10)  # NHWC maps come back as NCHW
    fs = collect_features(swin, x, names=["layers.1.blocks.0.attn", "layers.1.blocks.0.mlp"])
    assert fs["layers.1.blocks.0.attn"].shape == (2, 64, 32)
    assert fs["layers.1.blocks.0.mlp"].shape == (2, 32, 8, 8)


# ---- DDP: every model-level analysis equals one process ----------------------------------------------
def _ddp_all():
    model = TinyCNN()
    data = batches()
    return (
        {k: v.numpy() for k, v in fourier.model_delta_log_amplitude(model, data).items()},
        variance.model_feature_map_variance(model, data),
        robustness.frequency_noise_accuracy(model, data, [0.3, 0.9], eps=0.5, width=0.5, seed=1),
        lesion.lesion_accuracy(model, data).acc,
        robustness.evaluate_subsets(model, {("a", 1): data[:2], ("b", 1): data[2:], ("c", 2): data[1:]}),
    )


@pytest.mark.slow
def test_ddp_equals_single_process():
    single = _ddp_all()
    for res in run_distributed(_ddp_all, world_size=2):
        for a, b in zip(res[0].values(), single[0].values()):
            np.testing.assert_array_equal(a, b)
        assert res[1] == single[1]
        np.testing.assert_array_equal(res[2], single[2])
        assert res[3] == single[3]
        assert res[4] == single[4] and list(res[4]) == [("a", 1), ("b", 1), ("c", 2)]


def test_analyses_leave_model_and_rng_untouched():
    """No restore_state wrapper here: the pure functions themselves change nothing (eval mode inside,
    private noise generator, hooks removed)."""
    model = TinyCNN()
    model.train()
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    robustness.frequency_noise_accuracy(model, batches(), [0.5], eps=0.3, width=0.2)
    lesion.lesion_accuracy(model, batches())
    fourier.model_delta_log_amplitude(model, batches())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
