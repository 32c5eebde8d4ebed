"""`load_weights(model, path)`: a weights file into any model, safely, naming the first tensor that
does not fit.

Reads a plain state dict, a timm checkpoint (``state_dict`` / ``state_dict_ema`` / ``model``), a
Lightning checkpoint (``state_dict`` with the module's ``model.`` prefix) or a ``.safetensors`` file.
Nothing in the file runs: ``torch.load(..., weights_only=True)`` and safetensors hold tensors only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from alternet_pl.errors import InputError

__all__ = ["load_weights", "read_state_dict"]

#: where checkpoint formats keep the state dict, tried in order
_NESTED = ("state_dict", "state_dict_ema", "model", "module")
#: wrapper prefixes stripped when every key has one (Lightning's ImageClassifier, DataParallel)
_PREFIXES = ("model.", "module.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from a timm / Lightning checkpoint if needed.

    Raises `InputError` for a missing or unreadable file, or one that holds no state dict."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any reader error is the same bad input)
        raise InputError(
            f"--weights {path}: not a readable weights file ({' '.join(str(err).split())[:200]})"
        ) from None
    for key in _NESTED:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise InputError(f"--weights {path}: holds no state dict (tensors by name)")
    state = dict(loaded)
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` strictly; returns the model.

    Raises `InputError` naming the first tensor the model lacks, the file lacks, or whose shape
    differs, before anything is copied."""
    state = read_state_dict(path)
    own = model.state_dict()
    name = type(model).__name__
    for key, tensor in own.items():
        if key not in state:
            raise InputError(
                f"--weights {path}: no tensor {key!r} for {name} (the file has {len(state)} tensors)"
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise InputError(
                f"--weights {path}: tensor {key!r} has shape {tuple(state[key].shape)} in the file but "
                f"{tuple(tensor.shape)} in {name} (another variant or num_classes? see --model_kwargs)"
            )
    extra = [k for k in state if k not in own]
    if extra:
        raise InputError(f"--weights {path}: tensor {extra[0]!r} is not in {name} ({len(extra)} such)")
    model.load_state_dict(state, strict=True)
    return model
