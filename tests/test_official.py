"""The authors' checkpoints load: each official layout (tests/data/official/*.json, made with the authors'
own code) is filled by its seeded rule, converted, loaded strictly, and gives the authors' logits.

The layouts' tensors are filled exactly as each JSON's ``rule`` says; the logit comparisons run the
full-size models in float64 and are marked slow; recognition, conversion and the errors run on shapes.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest
import timm
import torch

import alternet_pl.models as zoo

DATA = Path(__file__).parent / "data" / "official"
NAMES = [
    "alternet_50_cifar100",
    "resnet_50_cifar100",
    "vit_ti_cifar100",
    "pit_ti_cifar100",
    "swin_ti_cifar100",
]


def layout(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def filled(spec: dict) -> dict[str, torch.Tensor]:
    """The official state dict, filled by the JSON's rule (seeded by each key's CRC32)."""
    state = {}
    for key, shape, how in spec["keys"]:
        if how == "keep":
            state[key] = torch.tensor(spec["kept"][key])
            continue
        t = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(key.encode())))
        if key.endswith("running_mean"):
            t = 0.1 * t
        elif key.endswith("running_var"):
            t = 0.5 + 0.5 * t.abs()
        elif any(w in key for w in ("pos_embed", "cls_token", "relative_position", "pos_embedding")):
            t = 0.02 * t
        elif len(shape) >= 2:
            t = t / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight"):
            t = 1 + 0.1 * t
        else:
            t = 0.1 * t
        state[key] = t
    return state


def shapes_only(spec: dict) -> dict[str, torch.Tensor]:
    """Keys and shapes of the layout, values irrelevant (recognition and conversion look at shapes)."""
    return {key: torch.empty(shape) for key, shape, _ in spec["keys"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_official_checkpoint_gives_the_authors_logits(name: str, tmp_path: Path) -> None:
    spec = layout(name)
    path = tmp_path / "renamed_checkpoint.pth.tar"  # recognised by content, not by file name
    torch.save({"state_dict": filled(spec), "epoch": 305}, path)
    model = zoo.load_official(path)
    assert model.official_arch == name and not model.training
    assert sum(p.numel() for p in model.parameters()) == spec["num_params"]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        logits = model.double()(x)
    # float64: at most 5.1e-14 from the authors' logits (alternet_50; resnet_50 exact); the README says 1e-12
    torch.testing.assert_close(logits, torch.tensor(spec["logits"], dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_each_layout_is_recognised_and_fits_its_model_exactly(name: str) -> None:
    spec = layout(name)
    got, converted = zoo.convert_official({"state_dict": shapes_only(spec)})
    assert got.name == name
    with torch.device("meta"):
        model = timm.create_model(got.model, num_classes=100, **got.model_kwargs)
    want = model.state_dict()
    assert converted.keys() == want.keys()  # nothing missing, nothing left over
    assert all(converted[k].shape == want[k].shape for k in want)
    assert sum(p.numel() for p in model.parameters()) == spec["num_params"]


def test_arch_overrides_recognition_and_a_wrong_arch_names_the_misfit() -> None:
    state = shapes_only(layout("vit_ti_cifar100"))
    assert zoo.convert_official(state, arch="vit_ti_cifar100")[0].name == "vit_ti_cifar100"
    with pytest.raises(ValueError, match=r"not the pit_ti_cifar100 .*closest: pit_ti_cifar100.*first misfit"):
        zoo.convert_official(state, arch="pit_ti_cifar100")
    with pytest.raises(ValueError, match=r"arch='vit'.*valid values"):
        zoo.convert_official(state, arch="vit")  # type: ignore[arg-type]


def test_other_models_get_the_closest_layout_and_first_misfit() -> None:
    # ViT-Ti with a qkv bias (what vit_cifar_ti was before): closest is ViT-Ti, the bias does not fit
    with torch.device("meta"):
        biased = timm.create_model("vit_cifar_ti", qkv_bias=True, num_classes=100).state_dict()
    with pytest.raises(ValueError, match=r"closest: vit_ti_cifar100.*key 'blocks\.0\.attn\.qkv\.bias'"):
        zoo.convert_official(biased)
    # an official AlterNet-50 missing one tensor
    state = shapes_only(layout("alternet_50_cifar100"))
    del state["layer3.1.attn.pos_embedding"]
    with pytest.raises(
        ValueError, match=r"closest: alternet_50_cifar100.*stages\.2\.1\.residual\.attn\.rel_pos_bias"
    ):
        zoo.convert_official(state)
    # a ResNet-50 whose fc has a wrong shape (2048 -> 1024 inputs)
    state = shapes_only(layout("resnet_50_cifar100"))
    state["classifier.0.dense.weight"] = torch.empty(100, 1024)
    with pytest.raises(
        ValueError, match=r"closest: resnet_50_cifar100.*'classifier\.0\.dense\.weight': shape"
    ):
        zoo.convert_official(state)
    with pytest.raises(ValueError, match="state dict"):
        zoo.convert_official({"state_dict": {"a": 1}})


def test_module_prefix_and_missing_file(tmp_path: Path) -> None:
    state = {"module." + k: v for k, v in shapes_only(layout("pit_ti_cifar100")).items()}
    assert zoo.convert_official(state)[0].name == "pit_ti_cifar100"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.load_official(tmp_path / "nope.pth")


@pytest.mark.slow
def test_swin_stored_masks_are_checked_against_the_model() -> None:
    """A Swin checkpoint whose stored attention mask differs from the model's is refused."""
    spec = layout("swin_ti_cifar100")
    state = filled(spec)
    zoo.load_official(state)  # the stored index tables and masks equal the recomputed ones
    state["layers.0.blocks.1.attn_mask"] = torch.zeros_like(state["layers.0.blocks.1.attn_mask"])
    with pytest.raises(ValueError, match=r"attn_mask.*differs"):
        zoo.load_official(state)


@pytest.mark.slow
def test_analyze_runs_analyses_on_an_official_checkpoint(tmp_path: Path) -> None:
    """`analyze --official PATH --data ...` writes results laid out like a run's, plus a config.yaml."""
    import yaml

    from alternet_pl import analyze
    from alternet_pl.analysis.records import load_record

    spec = layout("vit_ti_cifar100")
    path = tmp_path / "vit.pth.tar"
    torch.save({"name": "vit_ti", "state_dict": filled(spec)}, path)
    data = tmp_path / "data.yaml"
    init = {"num_train": 8, "num_val": 4, "num_classes": 100, "batch_size": 4}
    data.write_text(
        yaml.safe_dump({"data": {"class_path": "alternet_pl.data.SyntheticDataModule", "init_args": init}})
    )
    out = tmp_path / "run"
    args = ["--official", str(path), "--data", str(data), "--analysis", "variance", "--out_dir", str(out)]
    results = analyze.main([*args, "--variance.data.num_batches", "1"])
    record = load_record(out / "analysis" / "variance" / "vit-epoch=000.json")
    assert record.layers[0] == "patch_embed" and record.layers == results["variance"].layers
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (
        config["official"]["arch"] == "vit_ti_cifar100"
        and config["model"]["network"]["name"] == "vit_cifar_ti"
    )
    with pytest.raises(ValueError, match="--official / --model replace --config"):  # both together
        analyze.main([*args, "--config", str(data)])
    with pytest.raises(ValueError, match=r"has 100 classes but --data synthetic has 10"):
        analyze.main(
            ["--official", str(path), "--data", "synthetic", "--analysis", "variance", "--out_dir", str(out)]
        )


def test_analyze_official_arguments_are_checked_before_anything_loads(tmp_path: Path) -> None:
    from alternet_pl import analyze

    with pytest.raises(ValueError, match="need --data"):
        analyze.main(["--official", str(tmp_path / "x.pth"), "--analysis", "variance"])
    with pytest.raises(ValueError, match="pass --config"):  # neither --official nor --config / --ckpt_path
        analyze.main(["--analysis", "variance"])
    assert analyze.resolve_data_config("cifar100", "/data")["init_args"] == {"root": "/data"}
    with pytest.raises(ValueError, match=r"--data 'cifar1000'.*cifar100"):
        analyze.resolve_data_config("cifar1000")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {}\n")
    with pytest.raises(ValueError, match="no data: section"):
        analyze.resolve_data_config(str(bad))


def test_official_setup_builds_the_model_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`analyze --official` wraps the loaded model (`ImageClassifier(network=module)`): no second build.
    (A micro model stands in for the loaded checkpoint: what is counted is the module's own builds.)"""
    import alternet_pl.training.module as module_lib
    from alternet_pl import analyze

    loaded = timm.create_model("resnet_cifar_micro", num_classes=100)
    loaded.official_arch, loaded.num_classes = "vit_ti_cifar100", 100
    monkeypatch.setattr(analyze, "load_official", lambda path, arch=None: loaded)
    builds = []
    real = module_lib.create_model
    monkeypatch.setattr(module_lib, "create_model", lambda *a, **k: builds.append(a) or real(*a, **k))
    module, _, config = analyze.official_setup(tmp_path / "vit.pth", "cifar100", str(tmp_path))
    assert builds == [] and module.model is loaded
    assert config["model"]["network"]["name"] == "vit_cifar_ti" and "network" not in module.hparams
    plain = module_lib.ImageClassifier(module_lib.Network("resnet_cifar_micro"), 3)  # the next one builds
    assert builds == [("resnet_cifar_micro", 3)] and plain.model is not loaded
