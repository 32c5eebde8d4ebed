"""mCE as in the literature: the authors' AlexNet corruption errors ship with the package and are the
default baseline; relative mCE; corruption NLL as the mean of per-batch means. Expected values are
computed here by hand from the published figures (copied below from the authors' CSV files)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alternet_pl.analysis import baselines


def test_the_published_alexnet_tables_are_shipped_whole():
    for name, corruptions in (("cifar10", 15), ("cifar100", 19), ("imagenet", 15)):
        table = baselines.alexnet_table(name)
        assert len(table) == corruptions and all(sorted(per) == [1, 2, 3, 4, 5] for per in table.values())
    # figures as published (resources/results/*_alexnet_dnn_corrupted.csv: severity, name, nll, ..., acc, ...)
    assert baselines.alexnet_table("cifar100")["zoom_blur"][1] == {
        "acc": 0.4952,
        "nll": 2.673754337310791,
        "ece": 0.24232195142654503,
    }
    assert baselines.alexnet_table("cifar10")["fog"][3]["acc"] == 0.8097
    assert baselines.alexnet_table("imagenet")["brightness"][5]["acc"] == 0.24598
    errs = baselines.alexnet_errors("cifar10", (1, 3))
    assert errs["snow"] == pytest.approx([1 - 0.8185, 1 - 0.7411])
    assert "saturate" in baselines.alexnet_table("cifar100") and "saturate" not in errs
    assert baselines.alexnet_set_for("npy", 100) == "cifar100" and baselines.alexnet_set_for("folder", 1000)
    assert baselines.alexnet_set_for("npy", 7) is None


def test_relative_mce_by_hand():
    errors = {"fog": [0.3, 0.5], "snow": [0.2, 0.4]}
    base = {"fog": [0.4, 0.6], "snow": [0.5, 0.5]}
    rmce, rce = baselines.relative_mce(errors, 0.1, base, 0.2)
    assert rce["fog"] == pytest.approx((0.2 + 0.4) / (0.2 + 0.4))
    assert rce["snow"] == pytest.approx((0.1 + 0.3) / (0.3 + 0.3))
    assert rmce == pytest.approx((1.0 + 4 / 6) / 2)


def _cifar10c(root, rng):
    root.mkdir()
    for c in ("fog", "snow"):
        np.save(root / f"{c}.npy", rng.integers(0, 256, (5 * 4, 32, 32, 3), dtype=np.uint8))
    labels = rng.integers(0, 10, 20)
    np.save(root / "labels.npy", labels)
    return labels


def test_without_a_clean_error_relative_mce_is_one_line_naming_the_option():
    imagenet = baselines.missing_clean_error("alexnet_imagenet")
    assert "--corruption.baseline_clean_error" in imagenet and "\n" not in imagenet
    assert "0.435" in imagenet and "Hendrycks & Dietterich 2019" in imagenet
    cifar = baselines.missing_clean_error("alexnet_cifar100")
    assert cifar.endswith("(none is published for the authors' AlexNet here)")
    run_file = baselines.missing_clean_error("runs/x/analysis/corruption/epoch=000.json")
    assert run_file.endswith("pass --corruption.baseline_clean_error")
    # the published figure, cross-checked against torchvision's model card of the same AlexNet
    from torchvision.models import AlexNet_Weights

    top1 = AlexNet_Weights.IMAGENET1K_V1.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert baselines.PUBLISHED_CLEAN_ERROR == {"alexnet_imagenet": 0.435}
    assert round(1 - top1 / 100, 3) == 0.435


@pytest.mark.slow
def test_corruption_callback_mce_against_alexnet_relative_mce_and_per_batch_nll(tmp_path, caplog):
    from alternet_pl.callbacks.options import AnalysisData
    from alternet_pl.callbacks.robustness import CorruptionCallback
    from tests.conftest import micro_module_and_data

    module, dm = micro_module_and_data()  # a 10-class model: CIFAR-10-C's AlexNet table by default
    labels = _cifar10c(tmp_path / "CIFAR-10-C", np.random.default_rng(0))
    kw = dict(
        root=str(tmp_path / "CIFAR-10-C"),
        corruptions=["fog", "snow"],
        severities=[1, 3],
        eval_batch_size=3,
        data=AnalysisData(num_batches=1, batch_size=8),
        mean=(0.5, 0.5, 0.5),
        std=(0.2, 0.2, 0.2),
    )
    res = CorruptionCallback(baseline_clean_error=0.1, **kw).run(module, dm, tmp_path / "run", epoch=0)
    assert res.baseline == "alexnet_cifar10"
    errs = res.errors
    fog_base, snow_base = (1 - 0.8513) + (1 - 0.8097), (1 - 0.8185) + (1 - 0.7411)  # published accs
    assert res.mce == pytest.approx((sum(errs["fog"]) / fog_base + sum(errs["snow"]) / snow_base) / 2)
    clean_err = 1 - res.clean["acc"]
    rel = (
        (sum(errs["fog"]) - 2 * clean_err) / (fog_base - 0.2)
        + (sum(errs["snow"]) - 2 * clean_err) / (snow_base - 0.2)
    ) / 2
    assert res.relative_mce == pytest.approx(rel)
    # NLL of snow at severity 3 (images 8..11): batches of 3 and 1, the mean of the two batch means
    model = module.model.eval()
    x = (
        torch.from_numpy(np.load(tmp_path / "CIFAR-10-C" / "snow.npy")[8:12]).permute(0, 3, 1, 2).float()
        / 255
        - 0.5
    ) / 0.2
    with torch.no_grad():
        nll = torch.nn.functional.cross_entropy(
            model(x).double(), torch.from_numpy(labels[8:12]), reduction="none"
        )
    assert res.metrics["snow"]["3"]["nll"] == pytest.approx(float((nll[:3].mean() + nll[3:].mean()) / 2))
    assert res.metrics["snow"]["3"]["nll"] != pytest.approx(float(nll.mean()))  # not the per-sample mean
    with caplog.at_level("WARNING", logger="alternet_pl.callbacks.robustness"):
        unknown = CorruptionCallback(**kw).run(module, dm, tmp_path / "r4", epoch=0)
    assert unknown.mce == pytest.approx(res.mce) and unknown.relative_mce is None
    assert baselines.missing_clean_error("alexnet_cifar10") in caplog.messages
    settings = CorruptionCallback(**kw).settings()
    assert settings["image_size"] == 224 and settings["mean"] == [0.5] * 3 and settings["std"] == [0.2] * 3
    assert settings["baseline"] == "alexnet" and settings["eval_batch_size"] == 3
    with pytest.raises(ValueError, match="not in the baseline"):  # a corruption AlexNet was not run on
        baselines.relative_mce({"blur9": [0.1, 0.2]}, 0.0, baselines.alexnet_errors("cifar10", (1, 3)), 0.0)
    with pytest.raises(ValueError, match="baseline 'alexnet_svhn' unknown"):
        CorruptionCallback(baseline="alexnet_svhn", **kw).run(module, dm, tmp_path / "r2", epoch=0)
    none = CorruptionCallback(baseline=None, **kw).run(module, dm, tmp_path / "r3", epoch=0)
    assert none.mce is None and none.baseline is None and none.relative_mce is None
