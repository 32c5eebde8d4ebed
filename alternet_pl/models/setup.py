"""Any timm model (by registry name, ours included) with its weights and data, for `analyze --model`.

`build_model` creates it (``--model_kwargs``), loads ``--weights`` safely or timm's pretrained
weights; `preprocessing` follows the model's ``pretrained_cfg`` (mean, std, input size,
interpolation, crop) unless overridden; `model_setup` returns what `analyze` runs on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import timm
import timm.data
from lightning.pytorch.cli import instantiate_class
from torch import nn

from alternet_pl.errors import InputError
from alternet_pl.models.weights import load_weights

__all__ = ["build_model", "model_setup", "parse_json_option", "preprocessing"]


def parse_json_option(flag: str, text: str | None) -> dict[str, Any]:
    """``{}`` for None, else the JSON object ``text`` (raises `InputError` naming ``flag``)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{flag} {text!r} is not JSON ({err.msg}); e.g. {flag} '{{\"num_classes\": 10}}'"
        ) from None
    if not isinstance(value, dict):
        raise InputError(f"{flag} {text!r} must be a JSON object, e.g. '{{\"num_classes\": 10}}'")
    return value


def build_model(
    name: str,
    model_kwargs: Mapping[str, Any] | None = None,
    weights: str | None = None,
    pretrained: bool = False,
) -> nn.Module:
    """``timm.create_model(name, **model_kwargs)`` in eval mode, with ``weights`` (a file) or timm's
    pretrained weights. Raises `InputError` for an unknown name, bad kwargs, weights that do not fit,
    or pretrained weights that cannot be fetched (no network: pass ``--weights``)."""
    if weights and pretrained:
        raise InputError("--weights and --pretrained both given; pass one")
    if name not in timm.list_models() and not timm.is_model(name):
        near = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        raise InputError(
            f"--model {name!r} is not a timm model; e.g. {near or ['resnet50', 'vit_tiny_patch16_224']}"
        )
    try:
        model = timm.create_model(name, pretrained=pretrained, **dict(model_kwargs or {}))
    except TypeError as err:
        raise InputError(
            f"--model_kwargs: {name} does not take them ({' '.join(str(err).split())})"
        ) from None
    except Exception as err:  # noqa: BLE001  (download failures come in many types)
        if not pretrained:
            raise
        raise InputError(
            f"could not fetch {name}'s pretrained weights ({type(err).__name__}); without network access "
            "download them elsewhere and pass --weights FILE"
        ) from None
    if weights:
        load_weights(model, weights)
    return model.eval()


def preprocessing(model: nn.Module, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The model's evaluation preprocessing (timm's ``resolve_model_data_config``: input_size,
    interpolation, mean, std, crop_pct, crop_mode) with ``overrides`` laid over it."""
    cfg = dict(timm.data.resolve_model_data_config(model))
    unknown = sorted(set(overrides or {}) - set(cfg))
    if unknown:
        raise InputError(f"--preprocess: {unknown} not understood; choose from {sorted(cfg)}")
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:  # built at another size than its pretrained_cfg says (img_size=...)
        cfg["input_size"] = (cfg["input_size"][0], *tuple(img_size))
    cfg.update(overrides or {})
    cfg["input_size"] = tuple(cfg["input_size"])
    return cfg


def _apply(datamodule: Any, cfg: Mapping[str, Any]) -> None:
    """Normalise as the model expects; image-folder data resized / cropped as its config says."""
    datamodule.mean, datamodule.std = tuple(cfg["mean"]), tuple(cfg["std"])
    if getattr(datamodule, "transform_style", "") == "imagenet":
        datamodule.image_size = int(cfg["input_size"][-1])
        train_transform = datamodule.transform
        eval_transform = timm.data.create_transform(**cfg, is_training=False)

        def transform(train: bool) -> Any:
            return train_transform(True) if train else eval_transform

        datamodule.transform = transform


def model_setup(
    name: str,
    data_config: dict[str, Any],
    model_kwargs: Mapping[str, Any] | None = None,
    weights: str | None = None,
    pretrained: bool = False,
    preprocess: Mapping[str, Any] | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """(module, datamodule, run config) for ``analyze --model``: the model inside an `ImageClassifier`,
    the data module (synthetic data takes the model's input size and class count), preprocessing from
    the model. Raises `InputError` when the data's class count differs from the model's."""
    from alternet_pl.training.module import ImageClassifier

    model = build_model(name, model_kwargs, weights, pretrained)
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    cfg = preprocessing(model, preprocess)
    if data_config["class_path"].startswith("alternet_pl.data."):  # analyses never train: keep every image
        data_config["init_args"].setdefault("drop_last", False)
    if data_config["class_path"].endswith("SyntheticDataModule"):
        args = data_config["init_args"]
        args.setdefault("image_size", int(cfg["input_size"][-1]))
        args.setdefault("num_classes", num_classes)
    datamodule = instantiate_class((), data_config)
    _apply(datamodule, cfg)
    data_classes = getattr(datamodule, "num_classes", num_classes)
    if num_classes and data_classes != num_classes:
        raise InputError(
            f"--model {name} has {num_classes} classes but the data has {data_classes}; pass "
            f"--model_kwargs '{{\"num_classes\": {data_classes}}}' (and weights with that head)"
        )
    run_config = {
        "experiment": f"models/{name}",
        "model": {
            "timm": name,
            "kwargs": dict(model_kwargs or {}),
            "weights": weights,
            "pretrained": pretrained,
        },
        "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "data": data_config,
    }
    return ImageClassifier(model, num_classes or data_classes), datamodule, run_config
