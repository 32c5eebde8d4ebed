"""Checks `analyze` makes before any work: the device, an official checkpoint, a run config and its
model and data, the output folder. Each raises an `InputError`: one line naming the problem and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.cli import instantiate_class

from alternet_pl.errors import InputError, MissingInputError
from alternet_pl.runs import make_writable_folder
from alternet_pl.training import checkpoints
from alternet_pl.training.module import ImageClassifier

__all__ = [
    "build_from_run_config",
    "check_device",
    "check_official_file",
    "check_writable",
    "load_run_config",
]


def check_device(device: str) -> None:
    """Refuse `--device cuda` on a machine without a GPU (one line, before any work)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: this machine has no GPU; pass --device=cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise InputError(f"--device {device!r}: pass cpu or cuda (cuda:N for one GPU)")


def check_official_file(path: str) -> None:
    """An official checkpoint must exist, be a weights-only torch file, and not be a `fit` checkpoint."""
    raw = checkpoints.load_checkpoint(path)  # one line for missing / damaged / code-holding files
    if "pytorch-lightning_version" in raw or "loops" in raw:
        raise InputError(
            f"--official {path} is a checkpoint written by fit, not one of the paper's authors; analyse it "
            "with --config <its run>/config.yaml --ckpt_path " + str(path)
        )


def check_writable(out_dir: Path) -> None:
    """The output folder must be creatable and writable before any analysis runs."""
    make_writable_folder(out_dir, "--out_dir")


def build_from_run_config(run_config: dict[str, Any], path: str) -> tuple[ImageClassifier, Any]:
    """The model and data module a run config describes. Raises `InputError` for options this version
    does not take (an old run config) or values they refuse."""
    try:
        module = ImageClassifier.from_config(dict(run_config["model"]))
        datamodule = instantiate_class((), run_config["data"])
    except (TypeError, ValueError, KeyError, AttributeError, ImportError) as err:  # InputError too
        raise InputError(
            f"run config {path} does not fit this version ({' '.join(str(err).split())[:200]}); rewrite "
            "its model: / data: sections (see CHANGELOG.md)"
        ) from None
    return module, datamodule


def load_run_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"run config {path} not found (each run writes runs/<experiment>/<version>/config.yaml)"
        )
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(
            f"run config {path} is not valid YAML ({' '.join(str(err).split())[:160]})"
        ) from None
    if not isinstance(config, dict):
        raise InputError(
            f"run config {path} holds a {type(config).__name__}, not a mapping; pass a run's config.yaml"
        )
    for key in ("model", "data"):
        if key not in config:
            raise InputError(f"run config {path} has no '{key}' section; pass the config.yaml a run wrote")
    return config
