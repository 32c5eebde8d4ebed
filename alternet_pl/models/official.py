"""Load the paper authors' checkpoints into this project's models: ``load_official(path_or_state_dict)``.

The authors published CIFAR-100 checkpoints of ResNet-50, ViT-Ti, PiT-Ti and Swin-Ti (the transformers
built by timm 0.4.9), and their code writes AlterNet-50 checkpoints in its own layout. Each layout is
recognised from its keys and shapes alone (a renamed file still loads), renamed to this project's
registered model and loaded strictly: nothing missing, nothing left over.

What the conversion does, per layout:

- ``alternet_50_cifar100`` (official ``models.alternet.dnn_50``): ``layer{s}.{j}`` -> ``stages.{s-1}.{j}``;
  conv blocks ``bn`` / ``conv{i}`` / ``conv{i}.0`` (BN) / ``conv{i}.2`` (conv) -> ``norm`` /
  ``residual.conv{i}`` / ``residual.norm{i}``; MSA blocks ``norm1`` -> ``norm``, ``attn.pos_embedding``
  -> ``residual.attn.rel_pos_bias``, the 1x1 convs ``to_q`` + ``to_kv`` -> one linear ``qkv`` (rows q, k, v),
  ``to_out.0`` -> ``proj``; ``classifier.0.bn`` / ``.dense`` -> ``norm`` / ``fc``.
- ``resnet_50_cifar100`` (``models.resnet.dnn_50``, post-activation): ``layer0.0`` / ``.1`` ->
  ``stem.conv`` / ``stem.norm``; ``conv{i}.0`` / ``.1`` -> ``residual.conv{i}`` / ``residual.norm{i}``;
  ``shortcut.0`` / ``.1`` -> ``shortcut.conv`` / ``shortcut.norm``; ``classifier.0.dense`` -> ``fc``.
- ``vit_ti_cifar100``: timm 0.4.9 and the installed timm name every tensor alike.
- ``pit_ti_cifar100``: timm 0.4.9 keeps stage s's pooling at the end of stage s, timm now at the start of
  stage s + 1: ``transformers.{s}.pool`` -> ``transformers.{s+1}.pool``.
- ``swin_ti_cifar100``: likewise ``layers.{s}.downsample`` -> ``layers.{s+1}.downsample``; ``head`` ->
  ``head.fc``; the stored ``relative_position_index`` and ``attn_mask`` buffers are checked against the
  model's own (they are recomputed, not loaded).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal, get_args

import timm
import torch
from torch import nn

from alternet_pl.errors import InputError

__all__ = ["OFFICIAL_LAYOUTS", "OfficialArch", "OfficialLayout", "convert_official", "load_official"]

OfficialArch = Literal[
    "alternet_50_cifar100", "resnet_50_cifar100", "vit_ti_cifar100", "pit_ti_cifar100", "swin_ti_cifar100"
]
_DROP = "<drop>"  # rename target: a buffer the model recomputes (checked, not loaded)


@dataclass(frozen=True)
class OfficialLayout:
    """One official checkpoint layout and the registered model it becomes.

    name: the layout's name; model / model_kwargs: what ``timm.create_model`` builds; head_key: the
    official classifier weight (its rows give ``num_classes``); rename: official key -> this project's key
    (``_DROP``: a recomputed buffer; None: no such tensor in this layout).
    """

    name: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    head_key: str = "head.weight"
    rename: Callable[[str], str | None] = lambda key: key


def _rules(*pairs: tuple[str, str]) -> Callable[[str], str | None]:
    """A rename function from (regex, replacement) pairs: the first full match wins; None if none does."""
    compiled = [(re.compile(p), r) for p, r in pairs]

    def rename(key: str) -> str | None:
        for pattern, repl in compiled:
            if pattern.fullmatch(key):
                return pattern.sub(repl, key)
        return None

    return rename


def _shift_stage(key: str, group: str, module: str) -> str | None:
    """``{group}.{s}.{module}.x`` -> ``{group}.{s+1}.{module}.x`` (timm 0.4.9 -> timm: pooling moved)."""
    m = re.fullmatch(rf"{group}\.(\d+)\.{module}\.(.+)", key)
    return None if m is None else f"{group}.{int(m.group(1)) + 1}.{module}.{m.group(2)}"


_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_STAGE = r"layer([1-9])\.(\d+)\."


def _staged_rename(
    top: Callable[[str], str | None], block: Callable[[str], str | None]
) -> Callable[[str], str | None]:
    """The authors' ResNet-style keys: `top` renames stem and classifier keys; a key under
    ``layer<s>.<b>.`` becomes ``stages.<s-1>.<b>.`` + `block`'s rename of the rest (None: no rule fits)."""

    def rename(key: str) -> str | None:
        fixed = top(key)
        stage = re.match(_STAGE, key)
        if fixed is not None or stage is None:
            return fixed
        inner = block(key[stage.end() :])
        return None if inner is None else f"stages.{int(stage.group(1)) - 1}.{stage.group(2)}." + inner

    return rename


_alternet_rename = _staged_rename(
    _rules(
        (r"layer0\.layer0\.0\.weight", "stem.conv.weight"),
        (rf"classifier\.0\.bn\.{_BN}", r"norm.\1"),
        (r"classifier\.0\.dense\.(weight|bias)", r"fc.\1"),
    ),
    _rules(
        (r"shortcut\.0\.weight", "shortcut.weight"),
        (rf"(?:bn|norm1)\.{_BN}", r"norm.\1"),  # conv block / MSA block pre-activation BN
        (r"conv([1-3])\.weight", r"residual.conv\1.weight"),  # conv1 is a bare conv
        (rf"conv([2-3])\.0\.{_BN}", r"residual.norm\1.\2"),
        (r"conv([2-3])\.2\.weight", r"residual.conv\1.weight"),
        (r"conv\.weight", "residual.conv.weight"),
        (rf"norm2\.{_BN}", r"residual.norm2.\1"),
        (r"attn\.pos_embedding", "residual.attn.rel_pos_bias"),
        (r"attn\.attn\.to_q\.weight", "residual.attn.qkv.weight#0"),
        (r"attn\.attn\.to_kv\.weight", "residual.attn.qkv.weight#1"),
        (r"attn\.attn\.to_out\.0\.(weight|bias)", r"residual.attn.proj.\1"),
    ),
)

_resnet_rename = _staged_rename(
    _rules(
        (r"layer0\.0\.weight", "stem.conv.weight"),
        (rf"layer0\.1\.{_BN}", r"stem.norm.\1"),
        (r"classifier\.0\.dense\.(weight|bias)", r"fc.\1"),
    ),
    _rules(
        (r"shortcut\.0\.weight", "shortcut.conv.weight"),
        (rf"shortcut\.1\.{_BN}", r"shortcut.norm.\1"),
        (r"conv([1-3])\.0\.weight", r"residual.conv\1.weight"),
        (rf"conv([1-3])\.1\.{_BN}", r"residual.norm\1.\2"),
    ),
)


def _pit_rename(key: str) -> str | None:
    return _shift_stage(key, "transformers", "pool") or key


def _swin_rename(key: str) -> str | None:
    if key.endswith(("relative_position_index", "attn_mask")):
        return _DROP
    if key.startswith("head."):
        return "head.fc." + key[len("head.") :]
    return _shift_stage(key, "layers", "downsample") or key


OFFICIAL_LAYOUTS: dict[str, OfficialLayout] = {
    "alternet_50_cifar100": OfficialLayout(
        "alternet_50_cifar100", "alternet_cifar_50", {}, "classifier.0.dense.weight", _alternet_rename
    ),
    "resnet_50_cifar100": OfficialLayout(
        "resnet_50_cifar100",
        "resnet_cifar_50",
        {"block_style": "postact"},
        "classifier.0.dense.weight",
        _resnet_rename,
    ),
    "vit_ti_cifar100": OfficialLayout("vit_ti_cifar100", "vit_cifar_ti"),
    "pit_ti_cifar100": OfficialLayout("pit_ti_cifar100", "pit_cifar_ti", rename=_pit_rename),
    "swin_ti_cifar100": OfficialLayout("swin_ti_cifar100", "swin_cifar_ti", rename=_swin_rename),
}
assert set(OFFICIAL_LAYOUTS) == set(get_args(OfficialArch))


@dataclass
class _Fit:
    """How well a state dict fits one layout: the converted tensors and the first misfit, if any."""

    layout: OfficialLayout
    converted: dict[str, torch.Tensor]
    dropped: dict[str, tuple[str, torch.Tensor]]  # buffer name -> (official key, stored value)
    matched: int
    total: int
    misfit: str | None  # "key 'x': why", the first one in checkpoint order; None: fits exactly

    @property
    def score(self) -> float:
        return self.matched / max(1, self.total)


def _num_classes(state: Mapping[str, torch.Tensor], layout: OfficialLayout) -> int:
    head = state.get(layout.head_key)
    return int(head.shape[0]) if isinstance(head, torch.Tensor) and head.ndim == 2 else 100


def _build(layout: OfficialLayout, num_classes: int, device: str | torch.device) -> nn.Module:
    import alternet_pl.models  # noqa: F401  (registers the models)

    with torch.device(device):
        return timm.create_model(layout.model, num_classes=num_classes, **layout.model_kwargs)


@functools.lru_cache(maxsize=32)
def _target_shapes(name: str, num_classes: int) -> dict[str, torch.Size]:
    """{key: shape} of the layout's model (built once on the meta device: shapes only)."""
    return {k: v.shape for k, v in _build(OFFICIAL_LAYOUTS[name], num_classes, "meta").state_dict().items()}


def _fit(state: Mapping[str, torch.Tensor], layout: OfficialLayout) -> _Fit:
    """Rename ``state`` by ``layout`` and compare every tensor's shape with the model's."""
    target = _target_shapes(layout.name, _num_classes(state, layout))
    parts: dict[str, list[tuple[int, str, torch.Tensor]]] = {}
    dropped: dict[str, tuple[str, torch.Tensor]] = {}
    misfits: list[str] = []
    for key, value in state.items():
        new = layout.rename(key)
        if new is None:
            misfits.append(f"key {key!r}: no such tensor in the {layout.name} layout")
        elif new == _DROP:
            dropped[key] = (key, value)
        else:
            name, _, index = new.partition("#")
            parts.setdefault(name, []).append((int(index or 0), key, value))
    converted: dict[str, torch.Tensor] = {}
    for name, pieces in parts.items():
        pieces.sort(key=lambda p: p[0])
        first_key = pieces[0][1]
        value = pieces[0][2] if len(pieces) == 1 else torch.cat([p[2] for p in pieces])
        if name not in target:
            misfits.append(f"key {first_key!r}: no such tensor in the {layout.name} layout")
            continue
        want = target[name]
        if value.shape != want and value.ndim == len(want) + 2 and value.shape[2:] == (1, 1):
            value = value.reshape(value.shape[:2])  # a 1x1 conv stored where the model has a linear
        if value.shape != want:
            misfits.append(
                f"key {first_key!r}: shape {tuple(value.shape)}, the {layout.name} layout has {tuple(want)}"
            )
            continue
        converted[name] = value
    extra = len(misfits)  # checkpoint tensors the layout has no place for
    missing = [k for k in target if k not in converted]
    misfits += [f"the {layout.name} layout's tensor {k!r} (this project's name) is missing" for k in missing]
    return _Fit(
        layout, converted, dropped, len(converted), len(target) + extra, misfits[0] if misfits else None
    )


def _unwrap(state: Any) -> dict[str, torch.Tensor]:
    """The state dict inside ``{"state_dict": ...}`` (as the official ``_save`` writes), minus ``module.``."""
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            "expected a state dict (name -> tensor) or {'state_dict': ...}, as the official code saves; "
            f"got {type(state).__name__}"
        )
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel without unwrapping
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _convert(state_dict: Mapping[str, Any], arch: OfficialArch | None) -> _Fit:
    state = _unwrap(state_dict)
    if arch is not None and arch not in OFFICIAL_LAYOUTS:
        raise InputError(f"arch={arch!r}; valid values are {sorted(OFFICIAL_LAYOUTS)}")
    candidates = [OFFICIAL_LAYOUTS[arch]] if arch is not None else list(OFFICIAL_LAYOUTS.values())
    fits = [_fit(state, layout) for layout in candidates]
    exact = [f for f in fits if f.misfit is None]
    if exact:
        return exact[0]
    best = max(fits, key=lambda f: f.score)
    raise InputError(
        f"this state dict ({len(state)} tensors) is not {'the ' + arch if arch else 'any'} official "
        f"checkpoint layout; closest: {best.layout.name} ({best.matched} of its {best.total} tensors fit); "
        f"first misfit: {best.misfit}. Official layouts: {sorted(OFFICIAL_LAYOUTS)}"
    )


def convert_official(
    state_dict: Mapping[str, Any], arch: OfficialArch | None = None
) -> tuple[OfficialLayout, dict[str, torch.Tensor]]:
    """Recognise an official checkpoint's layout and rename it to this project's model.

    ``arch`` names the layout and skips recognition. Returns (layout, converted state dict), ready for a
    strict ``load_state_dict`` into ``timm.create_model(layout.model, num_classes=...,
    **layout.model_kwargs)`` (recomputed buffers such as Swin's ``attn_mask`` are left out). Raises
    ValueError naming the closest layout and the first key that does not fit it.
    """
    fit = _convert(state_dict, arch)
    return fit.layout, fit.converted


def _check_recomputed(model: nn.Module, stored: Mapping[str, torch.Tensor], layout: OfficialLayout) -> None:
    """The checkpoint's index tables and masks must equal the ones the model computes itself."""
    own = dict(model.named_buffers())
    for key, value in stored.items():
        mine = own.get(key)
        if mine is None or mine.shape != value.shape or not torch.allclose(mine.to(value.dtype), value):
            raise InputError(
                f"buffer {key!r} of the {layout.name} checkpoint differs from the one {layout.model} "
                "computes: the checkpoint was made with another window or shift configuration"
            )


def load_official(
    path_or_state_dict: str | PathLike[str] | Mapping[str, Any], arch: OfficialArch | None = None
) -> nn.Module:
    """An official checkpoint (file or state dict) as this project's registered model, in eval mode.

    The file is read with ``torch.load(weights_only=True)``; ``{"state_dict": ...}`` (as the official
    ``models._save`` writes) and a bare state dict are both accepted. The layout is recognised from keys
    and shapes (``arch`` overrides); the model is ``layout.model`` with the checkpoint's number of
    classes, loaded strictly. The returned model carries ``official_arch`` (the layout's name).
    Raises FileNotFoundError for a missing file and ValueError for a state dict that fits no layout.
    """
    if isinstance(path_or_state_dict, Mapping):
        raw = path_or_state_dict
    else:
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise FileNotFoundError(f"official checkpoint {str(path)!r} does not exist")
        raw = torch.load(path, map_location="cpu", weights_only=True)
    fit = _convert(raw, arch)
    model = _build(fit.layout, _num_classes(_unwrap(raw), fit.layout), "cpu")
    model.load_state_dict(fit.converted, strict=True)
    _check_recomputed(model, {k: v for k, (_, v) in fit.dropped.items()}, fit.layout)
    model.official_arch = fit.layout.name
    return model.eval()
