"""`analyze --model NAME --weights FILE --data ...`: any timm model, weights read safely in every
common format, the first tensor that does not fit named, preprocessing from the model's config."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from alternet_pl.errors import InputError
from alternet_pl.models.setup import build_model, model_setup, preprocessing
from alternet_pl.models.weights import load_weights, read_state_dict
from tests.test_anymodel import UserNet


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_weights_in_every_format_load_and_misfits_are_named(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = UserNet()
    state = source.state_dict()
    files = {
        "plain.pt": state,
        "lightning.ckpt": {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3},
        "timm.pth": {"state_dict_ema": state, "epoch": 1, "arch": "usernet"},
    }
    for name, payload in files.items():
        torch.save(payload, tmp_path / name)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for name in [*files, "w.safetensors"]:
        target = UserNet()
        assert not _same(source, target)
        assert _same(source, load_weights(target, tmp_path / name)), name
    wrong = UserNet(classes=7)
    with pytest.raises(InputError, match=r"tensor 'head.weight' has shape \(5, 8\) in the file but \(7, 8\)"):
        load_weights(wrong, tmp_path / "plain.pt")
    assert not torch.equal(wrong.stem.weight, source.stem.weight)  # nothing copied before the check
    torch.save({k: v for k, v in state.items() if k != "stage.0.branch.0.bias"}, tmp_path / "missing.pt")
    with pytest.raises(InputError, match="no tensor 'stage.0.branch.0.bias'"):
        load_weights(UserNet(), tmp_path / "missing.pt")
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(InputError, match="tensor 'extra.weight' is not in UserNet"):
        load_weights(UserNet(), tmp_path / "extra.pt")


class Payload:
    def __reduce__(self):  # would run code when unpickled without weights_only
        return (print, ("pickled code ran",))


def test_a_file_with_pickled_code_is_refused_without_running_it(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": Payload()}}, f)
    with pytest.raises(InputError, match="not a readable weights file"):
        read_state_dict(path)
    assert "pickled code ran" not in capsys.readouterr().out
    with pytest.raises(InputError, match="no such file"):
        read_state_dict(tmp_path / "nope.pt")


def test_pretrained_without_network_says_to_pass_weights(monkeypatch):
    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return timm.models.create_model(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(InputError, match="resnet18's pretrained weights .*pass --weights FILE"):
        build_model("resnet18", pretrained=True)
    with pytest.raises(InputError, match="is not a timm model"):
        build_model("resnet_nope_77")


def _folder(root, classes=2, per_class=2, side=40):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"n{c:08d}").mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"n{c:08d}" / f"{i}.JPEG")


def test_preprocessing_follows_the_models_config_unless_overridden(tmp_path):
    _folder(tmp_path / "imgs")
    data = {
        "class_path": "alternet_pl.data.ImageFolderDataModule",
        "init_args": {"root": str(tmp_path / "imgs")},
    }
    module, dm, run_config = model_setup("vit_tiny_patch16_224", data, {"num_classes": 2, "img_size": 32})
    cfg = preprocessing(module.model)
    assert cfg["input_size"] == (3, 32, 32) and run_config["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    gray = Image.fromarray(np.full((40, 40, 3), 200, dtype=np.uint8))
    x = dm.transform(False)(gray)
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(x, torch.full_like(x, (200 / 255 - 0.5) / 0.5), atol=1e-2, rtol=0)
    _, dm2, _ = model_setup(
        "resnet18", data, {"num_classes": 2}, preprocess={"input_size": [3, 24, 24], "mean": [0, 0, 0]}
    )
    y = dm2.transform(False)(gray)
    assert y.shape == (3, 24, 24)
    torch.testing.assert_close(y[0], torch.full_like(y[0], (200 / 255) / 0.229), atol=1e-2, rtol=0)
    with pytest.raises(InputError, match="has 1000 classes but the data has 2"):
        model_setup("resnet18", data)
    with pytest.raises(InputError, match=r"--preprocess: \['size'\] not understood"):
        model_setup("resnet18", data, {"num_classes": 2}, preprocess={"size": 3})


@pytest.mark.slow
def test_analyze_cli_runs_a_timm_model_with_a_weights_file(tmp_path, capsys):
    from alternet_pl import analyze
    from alternet_pl.analysis.records import load_record
    from alternet_pl.errors import run_command

    torch.manual_seed(0)
    source = timm.create_model("resnet18", num_classes=10)
    torch.save(source.state_dict(), tmp_path / "r18.pt")
    out = tmp_path / "out"
    args = [
        "--model",
        "resnet18",
        "--model_kwargs",
        '{"num_classes": 10}',
        "--weights",
        str(tmp_path / "r18.pt"),
    ]
    args += ["--data", "synthetic", "--preprocess", '{"input_size": [3, 64, 64]}', "--analysis", "fourier"]
    args += [
        "--fourier.data.num_batches=1",
        "--fourier.data.batch_size=4",
        "--device=cpu",
        "--out_dir",
        str(out),
    ]
    results = analyze.main(args)
    record = load_record(out / "analysis" / "fourier" / "r18-epoch=000.json")
    assert record.layers[:3] == ["stem", "layer1.0", "layer1.1"] and record.kinds[1] == "conv"
    assert results["fourier"].hf == record.hf and (out / "config.yaml").is_file()
    capsys.readouterr()
    bad = [a if a != '{"num_classes": 10}' else '{"num_classes": 7}' for a in args]
    with pytest.raises(SystemExit) as exit_info:
        run_command(analyze.main, bad)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and "'fc.weight' has shape (10, 512)" in err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "resnet50",
            ["stem"] + [f"layer{s}.{j}" for s, n in zip((1, 2, 3, 4), (3, 4, 6, 3)) for j in range(n)],
        ),
        ("vit_tiny_patch16_224", ["stem"] + [f"blocks.{i}.{p}" for i in range(12) for p in ("attn", "mlp")]),
    ],
)
def test_the_papers_imagenet_fourier_figure_config_on_random_weights(name, expected, tmp_path):
    """configs/analysis/fourier_imagenet.yaml on a tiny ImageNet-layout folder written here, at 224 px:
    the authors' points, and values equal to the Fourier analysis of the same model on the same images."""
    from alternet_pl import analyze
    from alternet_pl.analysis import fourier

    _folder(tmp_path / "imagenet", side=256)
    torch.manual_seed(0)
    torch.save(timm.create_model(name, num_classes=2).state_dict(), tmp_path / "w.pt")
    args = ["--model", name, "--model_kwargs", '{"num_classes": 2}', "--weights", str(tmp_path / "w.pt")]
    args += ["--data", "imagenet", "--data_root", str(tmp_path / "imagenet")]
    args += ["--analyses_from", "configs/analysis/fourier_imagenet.yaml", "--analysis", "fourier"]
    args += ["--fourier.data.num_batches=1", "--fourier.data.batch_size=2", "--device=cpu"]
    args += ["--out_dir", str(tmp_path / "out")]
    record = analyze.main(args)["fourier"]
    assert record.layers == expected and len(record.curves[0]) == (
        28 if name == "resnet50" else 7
    )  # 56x56 and 14x14 maps
    module, dm, _ = model_setup(
        name,
        analyze.resolve_data_config("imagenet", str(tmp_path / "imagenet")),
        {"num_classes": 2},
        str(tmp_path / "w.pt"),
    )
    ref = fourier.run(module.model, None, dm.analysis_batches("val", 1, 2), fourier.FourierOptions())
    np.testing.assert_allclose(record.hf, ref.hf, rtol=1e-6)
