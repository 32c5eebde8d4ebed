"""CIFAR-C / ImageNet-C loaders on tiny hand-written files in the real layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alternet_pl.data.corruptions import CorruptionDataModule, corruption_dataset, detect_layout

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
N = 3  # images per severity


def write_cifar_c(root, corruptions=("fog", "snow"), n=N, labels_n=None):
    root.mkdir(parents=True, exist_ok=True)
    for k, c in enumerate(corruptions):
        imgs = np.zeros((5 * n, 4, 4, 3), np.uint8)
        for s in range(5):
            for i in range(n):
                imgs[s * n + i] = 100 * k + 10 * (s + 1) + i  # encodes corruption, severity, index
        np.save(root / f"{c}.npy", imgs)
    labels = np.array([(s * n + i) % 7 for s in range(5) for i in range(n)], np.int64)
    np.save(root / "labels.npy", labels[: labels_n or 5 * n])
    return root


def raw(x: torch.Tensor) -> torch.Tensor:
    return torch.round((x * STD[0] + MEAN[0]) * 255)


def test_cifar_c_severities_and_labels(tmp_path):
    root = write_cifar_c(tmp_path / "c")
    assert detect_layout(root) == "npy"
    dm = CorruptionDataModule(root, MEAN, STD, corruptions=["fog", "snow"], batch_size=2)
    dm.setup()
    assert dm.keys == [(c, s) for c in ("fog", "snow") for s in range(1, 6)]
    for (c, s), ds in dm.datasets.items():
        assert len(ds) == N
        for i in range(N):
            x, y = ds[i]
            assert x.shape == (3, 4, 4) and x.dtype == torch.float32
            assert torch.all(raw(x) == 100 * ("fog", "snow").index(c) + 10 * s + i)
            assert y == ((s - 1) * N + i) % 7
    loaders = dm.test_dataloader()
    assert len(loaders) == 10 and sum(len(b[1]) for b in loaders[0]) == N
    sub = corruption_dataset(root, "snow", 4, MEAN, STD, max_images=2)
    assert len(sub) == 2 and torch.all(raw(sub[1][0]) == 100 + 40 + 1)


def test_missing_files_and_label_mismatch_name_the_file(tmp_path):
    root = write_cifar_c(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match=r"gaussian_noise\.npy"):
        CorruptionDataModule(root, MEAN, STD).setup()  # default: the 15 benchmark corruptions
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detect_layout(tmp_path / "nowhere")
    bad = write_cifar_c(tmp_path / "bad", labels_n=5 * N - 1)
    with pytest.raises(ValueError, match=r"label count mismatch.*labels\.npy"):
        corruption_dataset(bad, "fog", 1, MEAN, STD)
    np.save(bad / "odd.npy", np.zeros((7, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="5 severities"):
        corruption_dataset(bad, "odd", 1, MEAN, STD)
    with pytest.raises(ValueError, match="severity 6"):
        corruption_dataset(root, "fog", 6, MEAN, STD)


def test_imagenet_c_folder_layout(tmp_path):
    from PIL import Image

    root = tmp_path / "inc"
    for s in (1, 2):
        for k, cls in enumerate(["n01", "n02"]):
            d = root / "fog" / str(s) / cls
            d.mkdir(parents=True)
            Image.fromarray(np.full((8, 8, 3), 50 * s + k, np.uint8)).save(d / "a.png")
    assert detect_layout(root) == "folder"
    dm = CorruptionDataModule(root, MEAN, STD, corruptions=["fog"], severities=[1, 2], image_size=8)
    dm.setup()
    x, y = dm.datasets[("fog", 2)][1]
    assert y == 1 and x.shape == (3, 8, 8) and torch.allclose(raw(x), torch.tensor(101.0))
    with pytest.raises(FileNotFoundError, match=r"fog[/\\]3"):
        corruption_dataset(root, "fog", 3, MEAN, STD)


def test_corruption_callback_metrics_and_mce_against_itself(tmp_path):
    from alternet_pl.callbacks.options import AnalysisData
    from alternet_pl.callbacks.robustness import CorruptionCallback
    from tests.conftest import micro_module_and_data

    module, dm = micro_module_and_data()
    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    rng = np.random.default_rng(0)
    for c in ("fog", "snow"):
        np.save(root / f"{c}.npy", rng.integers(0, 256, (5 * 4, 32, 32, 3), dtype=np.uint8))
    labels = rng.integers(0, 10, 20)
    np.save(root / "labels.npy", labels)
    kw = dict(
        root=str(root),
        corruptions=["fog", "snow"],
        severities=[1, 3],
        eval_batch_size=3,
        data=AnalysisData(num_batches=1, batch_size=8),
    )
    cb = CorruptionCallback(**kw)
    res = cb.run(module, dm, tmp_path / "run", epoch=0)
    # reference: the model on the raw arrays, normalised with the datamodule's statistics
    model = module.model.eval()
    imgs = np.load(root / "snow.npy")[8:12]  # severity 3 of n = 4
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.2
    with torch.no_grad():
        acc = (model(x).argmax(-1).numpy() == labels[8:12]).mean()
    assert res.metrics["snow"]["3"]["acc"] == pytest.approx(acc)
    errs = res.errors
    assert res.mean_corruption_error == pytest.approx(np.mean(errs["fog"] + errs["snow"]))
    base = tmp_path / "run" / "analysis" / "corruption" / "epoch=000.json"
    assert base.is_file()
    # mCE through the callback against a hand-written baseline file with known errors
    hand = tmp_path / "baseline.json"
    hand.write_text(json.dumps({"errors": {"fog": [0.5, 0.5], "snow": [0.25, 0.25]}, "severities": [1, 3]}))
    again = CorruptionCallback(baseline=str(hand), **kw).run(module, dm, tmp_path / "r2", 0)
    expected = (sum(errs["fog"]) / 1.0 + sum(errs["snow"]) / 0.5) / 2
    assert again.mce == pytest.approx(expected)
    hand.write_text(json.dumps({"errors": {"fog": [0.5, 0.5], "snow": [0.25, 0.25]}, "severities": [2, 4]}))
    with pytest.raises(ValueError, match="severities"):
        CorruptionCallback(baseline=str(hand), **kw).run(module, dm, tmp_path / "r3", 0)
    with pytest.raises(ValueError, match="--corruption.root"):
        CorruptionCallback()


# ----------------------------------------------------------------------------- values on a real classifier


def test_corruption_metrics_of_a_real_classifier_follow_each_corruption(tmp_path):
    """A hand-built classifier that is always right on clean images, on CIFAR-C files of three corruptions:
    a no-op (every severity clean), Gaussian noise and contrast loss growing with severity. Every (corruption,
    severity) metric must equal the model on exactly that slice of the file, the no-op must cost nothing and
    the real corruptions must cost more with severity."""
    from alternet_pl.analysis import robustness
    from tests.test_robustness import PATTERNS, TemplateClassifier, class_patterns

    n, amp = 24, 10.0  # images per severity; pattern amplitude in grey levels
    labels = np.arange(5 * n) % len(PATTERNS)
    clean = 128 + amp * class_patterns().permute(0, 2, 3, 1).numpy()[labels]  # (5n, 32, 32, 3)
    rng = np.random.default_rng(0)
    severity = np.repeat(np.arange(1, 6), n)[:, None, None, None]
    sigma = np.array([0, 10, 40, 100, 200, 400])[severity]
    contrast = np.array([1, 0.9, 0.7, 0.5, 0.4, 0.3])[severity]
    files = {
        "identity": clean,
        "gaussian_noise": clean + sigma * rng.standard_normal(clean.shape),
        "contrast": 128 + contrast * (clean - 128),
    }
    root = tmp_path / "CIFAR-C"
    root.mkdir()
    for name, imgs in files.items():
        np.save(root / f"{name}.npy", np.clip(np.round(imgs), 0, 255).astype(np.uint8))
    np.save(root / "labels.npy", labels)

    model = TemplateClassifier(scale=0.5).eval()
    dm = CorruptionDataModule(root, MEAN, STD, corruptions=list(files), batch_size=10)
    dm.setup()
    got = robustness.evaluate_subsets(model, dict(zip(dm.keys, dm.test_dataloader())), n_bins=10)

    def reference(name: str, s: int) -> dict[str, float]:
        """The model on rows (s-1)n .. sn - 1 of the file, normalised by hand; ECE over 10 bins by loops."""
        imgs = np.load(root / f"{name}.npy")[(s - 1) * n : s * n]
        x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).double() / 255 - MEAN[0]) / STD[0]
        with torch.no_grad():
            p = torch.softmax(model(x).double(), -1)
        y = torch.from_numpy(labels[(s - 1) * n : s * n])
        conf, pred = p.max(-1)
        ece = 0.0
        for b in range(10):
            inside = (conf > b / 10) & (conf <= (b + 1) / 10)
            if inside.any():
                ece += abs(float((pred[inside] == y[inside]).double().sum() - conf[inside].sum())) / n
        nll = float(-p[torch.arange(n), y].log().mean())
        return {"acc": float((pred == y).double().mean()), "nll": nll, "ece": ece}

    for name in files:
        for s in range(1, 6):
            want = reference(name, s)
            for metric in ("acc", "nll", "ece"):
                assert got[(name, s)][metric] == pytest.approx(want[metric], rel=1e-5, abs=1e-9), (
                    name,
                    s,
                    metric,
                )
    acc = {c: [got[(c, s)]["acc"] for s in range(1, 6)] for c in files}
    nll = {c: [got[(c, s)]["nll"] for s in range(1, 6)] for c in files}
    assert acc["identity"] == [1.0] * 5 and len(set(nll["identity"])) == 1  # it really classifies
    assert acc["gaussian_noise"][0] == 1.0 and acc["gaussian_noise"][4] <= 0.5  # noise costs accuracy
    assert nll["gaussian_noise"][4] > nll["gaussian_noise"][0]
    assert all(a < b for a, b in zip(nll["contrast"], nll["contrast"][1:]))  # less contrast, less confidence
    assert nll["contrast"][0] > nll["identity"][0]
    errors = robustness.corruption_errors({c: {s: got[(c, s)] for s in range(1, 6)} for c in files})
    assert errors["identity"] == [0.0] * 5
    assert robustness.mean_corruption_error(errors) == pytest.approx(1 - np.mean([acc[c] for c in files]))
