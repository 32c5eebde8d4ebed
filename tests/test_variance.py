"""Feature-map variance against a brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alternet_pl.analysis import variance


def brute_force(z: np.ndarray) -> float:
    """Mean over batch and channels of the unbiased variance over the spatial positions, by loops."""
    b, c, h, w = z.shape
    total = 0.0
    for i in range(b):
        for j in range(c):
            vals = z[i, j].ravel()
            m = vals.sum() / vals.size
            total += ((vals - m) ** 2).sum() / (vals.size - 1)
    return total / (b * c)


def test_matches_brute_force_and_scales_by_c_squared():
    z = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 + 1
    v = variance.feature_map_variance({"z": z, "cz": -3.0 * z, "shift": z + 7.0})
    assert v["z"] == pytest.approx(brute_force(z.double().numpy()), rel=1e-12)
    assert v["cz"] == pytest.approx(9.0 * v["z"], rel=1e-12)
    assert v["shift"] == pytest.approx(v["z"], rel=1e-9)


def test_constant_map_has_zero_variance_and_tokens_match_map():
    assert variance.feature_map_variance({"c": torch.full((2, 3, 4, 4), 5.0)})["c"] == 0.0
    fmap = torch.randn(2, 6, 4, 4)
    tokens = fmap.flatten(2).transpose(1, 2)
    cls = torch.cat([100 * torch.ones(2, 1, 6), tokens], 1)  # a huge CLS token must be dropped
    v = variance.feature_map_variance({"map": fmap, "tok": tokens, "cls": cls})
    assert v["tok"] == pytest.approx(v["map"], rel=1e-12) and v["cls"] == pytest.approx(v["map"], rel=1e-12)


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 1, 1), (2, 14, 3)])
def test_bad_shapes_raise(shape):
    with pytest.raises(ValueError, match="exclude this layer"):
        variance.feature_map_variance({"bad": torch.randn(shape)})


def test_depth_summary_by_kind():
    import math

    from alternet_pl.callbacks.layers import depth_summary
    from tests.test_fourier import TinyCNN

    s = depth_summary(TinyCNN(), ["stem", "b1", "b2"], [1.0, 2.0, 8.0], "var", log_ratio=True)
    assert s["kinds"] == ["stem", "conv", "conv"] and s["depth"] == [0.0, 0.5, 1.0]
    expected = {"var_stem": 1.0, "var_conv": 5.0, "var_change_conv": pytest.approx(1.5 * math.log(2))}
    assert s["scalars"] == expected
    d = depth_summary(TinyCNN(), ["stem", "b1", "b2"], [0.0, -1.0, 0.5], "hf")
    assert d["scalars"]["hf_change_conv"] == pytest.approx((-1.0 + 1.5) / 2)
    # b1 halves the resolution: its change is left out, only b2's (same size as b1) counts
    r = depth_summary(TinyCNN(), ["stem", "b1", "b2"], [0.0, -1.0, 0.5], "hf", sizes=[8, 4, 4])
    assert r["scalars"]["hf_change_conv"] == pytest.approx(1.5)
    q = depth_summary(TinyCNN(), ["stem", "b1", "b2"], [0.0, -1.0, 0.5], "hf", sizes=[8, 4, 2])
    assert math.isnan(q["scalars"]["hf_change_conv"])
