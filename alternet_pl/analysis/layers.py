"""Layers from the model: the points of a depth curve for any `nn.Module`.

A model with ``analysis_layers()`` (this project's models) names its own points. Any other model
(timm, torchvision, a user's ``nn.Module``) gets them from its module tree, as the authors' Fourier
notebook cuts timm's ResNet-50 and ViT-Ti into blocks:

- ``stem``: the input of the first block (everything before it: ResNet's conv-bn-act-maxpool, a
  ViT's patch embedding after the CLS token and position embedding are added);
- every block of a stage: each block-like child of the innermost ``nn.Sequential`` /
  ``nn.ModuleList`` holding blocks (ResNet's ``layer1.0``, ViT's ``blocks.3``, Swin's
  ``layers.0.blocks.1``, ConvNeXt's ``stages.0.blocks.2``), or of a stage timm lists in
  ``feature_info`` made of same-class blocks (RegNet's ``s3.b2``); a container holding a plain block
  is innermost, so a hybrid block beside it is one point (MobileViT's ``stages.2.1``); where no
  container exists, the stages timm lists in ``feature_info``;
- a transformer block (timm's ``norm1/attn/norm2/mlp`` or torchvision's ``ln_1/self_attention/
  ln_2/mlp``) gives two points, after its attention and after its MLP residual step (``.attn``,
  ``.mlp``), as the authors measure ViTs.

Each point's kind comes from the modules inside it: an attention module anywhere inside makes it
``msa``, else a convolution makes it ``conv``, else ``other``. The lesion branch (zeroed so the block
becomes its shortcut) is timm's ``drop_path``, a ResNet block's last norm, or a ``residual`` /
``branch`` child; a block without one cannot be lesioned. Overrides: ``layers`` as name patterns
(``fnmatch``; a pattern may also name any module of the model) and ``kinds`` as a mapping
{pattern: kind}.
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.conv import _ConvNd

from alternet_pl.errors import InputError
from alternet_pl.models.taps import KINDS, Tap

__all__ = [
    "DEFAULT_KINDS",
    "KIND_ALIASES",
    "LayerOptions",
    "block_kind",
    "discover_layers",
    "lesion_branch",
    "model_layers",
    "resolve_kind",
    "select_taps",
]

#: the block outputs the feature analyses look at by default
DEFAULT_KINDS = ("stem", "conv", "msa", "mlp", "other")

#: words a `kinds:` mapping may use for the project's kind names
KIND_ALIASES = {"attention": "msa", "self-attention": "msa", "convolution": "conv"}

#: child names that hold a block's residual branch, tried in order (timm, torchvision, users)
_BRANCH_NAMES = ("drop_path", "residual", "branch")


def resolve_kind(kind: str) -> str:
    """A kind name or alias ("attention" -> "msa"); raises `InputError` for anything else."""
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise InputError(f"kind {kind!r} not understood; choose one of {list(KINDS) + list(KIND_ALIASES)}")
    return kind


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or "Attention" in type(module).__name__


def block_kind(module: nn.Module) -> str:
    """ "msa" when an attention module is anywhere inside, else "conv" with a convolution, else "other"."""
    mods = list(module.modules())
    if any(_is_attention(m) for m in mods):
        return "msa"
    return "conv" if any(isinstance(m, _ConvNd) for m in mods) else "other"


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _is_layer(module: nn.Module) -> bool:
    """A single layer rather than a block: a leaf, or a Sequential of leaves (conv-norm-act)."""
    children = list(module.children())
    leaves = all(not list(c.children()) for c in children)
    return not children or (isinstance(module, nn.Sequential) and leaves)


def _is_block(module: nn.Module) -> bool:
    return not _is_layer(module) and _has_params(module)


def _is_stage(module: nn.Module, listed: set[int]) -> bool:
    """A stage timm lists in ``feature_info`` written as a plain module of same-class blocks (RegNet's
    ``RegStage`` of ``b1``, ``b2``, ...): it holds blocks like an ``nn.Sequential``."""
    kids = [c for c in module.children() if _has_params(c)]
    return (
        id(module) in listed
        and bool(kids)
        and len({type(c) for c in kids}) == 1
        and all(_is_block(c) and not isinstance(c, nn.Sequential | nn.ModuleList) for c in kids)
    )


def _holds_blocks(module: nn.Module, listed: set[int]) -> bool:
    if isinstance(module, nn.Sequential | nn.ModuleList):
        return any(_is_block(c) for c in module.children())
    return _is_stage(module, listed)


def _has_inner(module: nn.Module, listed: set[int]) -> bool:
    return any(_holds_blocks(m, listed) for m in module.modules())


def _find_blocks(module: nn.Module, prefix: str, out: list[tuple[str, nn.Module]], listed: set[int]) -> None:
    """Depth first: the block children of each innermost block container, in registration order.

    A container that holds at least one plain block (no blocks inside) is innermost: every block in
    it is a point, a hybrid one included (MobileViT's ``MobileVitBlock`` beside its conv blocks runs a
    transformer on unfolded patches, not on the image's maps, so the block is one point, taken whole).
    """
    holds = _holds_blocks(module, listed)
    kids = [(f"{prefix}{n}", c, _has_inner(c, listed)) for n, c in module.named_children()]
    innermost = holds and any(_is_block(c) and not inner for _, c, inner in kids)
    for path, child, inner in kids:
        if holds and _is_block(child) and (innermost or not inner):
            out.append((path, child))
        elif inner:
            _find_blocks(child, f"{path}.", out, listed)


def _listed_stages(model: nn.Module) -> list[str]:
    info = getattr(model, "feature_info", None) or []
    return [d["module"] for d in info if isinstance(d, dict) and isinstance(d.get("module"), str)]


def _feature_info_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """timm's listed stages (``feature_info``) that are modules of the model."""
    named = dict(model.named_modules())
    return [(n, named[n]) for n in _listed_stages(model) if n in named and _is_block(named[n])]


def lesion_branch(block: nn.Module) -> nn.Module | None:
    """The module whose output a lesion zeroes so that ``block`` acts as its shortcut, or None.

    timm's ``drop_path`` (when the block has a skip: not EfficientNet's ``has_skip=False``, nor a
    ``shortcut`` slot set to None as in timm's byobnet / MobileViT blocks), a ResNet block's last norm
    (``bn3`` / ``bn2`` beside a ``downsample`` slot), a ``residual`` or ``branch`` child.
    """
    if getattr(block, "has_skip", True) is False or (hasattr(block, "shortcut") and block.shortcut is None):
        return None
    for name in _BRANCH_NAMES:
        child = getattr(block, name, None)
        if isinstance(child, nn.Module):
            return child
    if hasattr(block, "downsample"):
        for name in ("bn3", "bn2"):
            child = getattr(block, name, None)
            if isinstance(child, nn.Module):
                return child
    return None


def _transformer_taps(name: str, blk: nn.Module) -> OrderedDict[str, Tap] | None:
    """``name.attn`` (after the attention residual step) and ``name.mlp`` of a transformer block."""
    taps: OrderedDict[str, Tap] = OrderedDict()
    get = lambda attr: getattr(blk, attr, None)  # noqa: E731
    timm_parts = ("norm1", "attn", "norm2", "mlp", "drop_path1", "drop_path2")
    if all(isinstance(get(a), nn.Module) for a in timm_parts):
        if not _is_attention(get("attn")):
            return None
        attn = tuple(m for m in (get("norm1"), get("attn"), get("ls1")) if m is not None)
        mlp = tuple(m for m in (get("norm2"), get("mlp"), get("ls2")) if m is not None)
        taps[f"{name}.attn"] = Tap(get("norm2"), "msa", point="input", branch=get("drop_path1"), params=attn)
        taps[f"{name}.mlp"] = Tap(blk, "mlp", branch=get("drop_path2"), params=mlp)
        return taps
    if all(isinstance(get(a), nn.Module) for a in ("ln_1", "self_attention", "dropout", "ln_2", "mlp")):
        attn = (get("ln_1"), get("self_attention"))
        taps[f"{name}.attn"] = Tap(get("ln_2"), "msa", point="input", branch=get("dropout"), params=attn)
        taps[f"{name}.mlp"] = Tap(blk, "mlp", branch=get("mlp"), params=(get("ln_2"), get("mlp")))
        return taps
    return None


def discover_layers(model: nn.Module) -> OrderedDict[str, Tap]:
    """The stem and block points of a model without ``analysis_layers()`` (see the module docstring).

    Raises `InputError` when the model has no blocks to find (name modules with ``layers`` patterns).
    """
    named = dict(model.named_modules())
    listed = {id(named[n]) for n in _listed_stages(model) if n in named}
    blocks: list[tuple[str, nn.Module]] = []
    _find_blocks(model, "", blocks, listed)
    if not blocks:
        blocks = _feature_info_blocks(model)
    if not blocks:
        raise InputError(
            f"found no blocks in {type(model).__name__} (no nn.Sequential / nn.ModuleList of blocks, no "
            "timm feature_info); name the modules to analyse with `layers` patterns, e.g. ['features.*']"
        )
    taps: OrderedDict[str, Tap] = OrderedDict(stem=Tap(blocks[0][1], "stem", point="input"))
    for name, blk in blocks:
        split = _transformer_taps(name, blk)
        if split is not None:
            taps.update(split)
        else:
            taps[name] = Tap(blk, block_kind(blk), branch=lesion_branch(blk), params=(blk,))
    return taps


def _module_taps(model: nn.Module, patterns: Iterable[str], known: Mapping[str, Tap]) -> dict[str, Tap]:
    """Taps on any module whose name matches one of the patterns (output point, kind from inside)."""
    out = {}
    for name, mod in model.named_modules():
        if name and name not in known and any(fnmatch.fnmatchcase(name, p) for p in patterns):
            out[name] = Tap(mod, block_kind(mod), branch=lesion_branch(mod), params=(mod,))
    return out


def _forward_order(model: nn.Module, taps: Mapping[str, Tap]) -> list[str]:
    """Names sorted by when their point is reached: a module's output after all its children
    (post-order), an input point just before its module's first descendant."""
    post: dict[int, float] = {}
    first: dict[int, float] = {}

    def walk(mod: nn.Module) -> None:
        start = len(post)
        for child in mod.children():
            walk(child)
        post.setdefault(id(mod), float(len(post)))
        first.setdefault(id(mod), start - 0.5)

    walk(model)
    key = {n: (first if t.point == "input" else post)[id(t.module)] for n, t in taps.items()}
    return sorted(taps, key=lambda n: key[n])


def model_layers(model: nn.Module, kinds: Mapping[str, str] | None = None) -> OrderedDict[str, Tap]:
    """Every point of the model: ``analysis_layers()`` if it has one, else `discover_layers`, with
    the kinds of names matching a ``kinds`` pattern replaced (first matching pattern wins)."""
    own = getattr(model, "analysis_layers", None)
    taps = OrderedDict(own()) if callable(own) else discover_layers(model)
    return _relabel(taps, kinds) if kinds else taps


def _relabel(taps: Mapping[str, Tap], kinds: Mapping[str, str]) -> OrderedDict[str, Tap]:
    resolved = {p: resolve_kind(k) for p, k in kinds.items()}
    out = OrderedDict()
    for name, tap in taps.items():
        new = next((k for p, k in resolved.items() if fnmatch.fnmatchcase(name, p)), tap.kind)
        out[name] = tap if new == tap.kind else Tap(tap.module, new, tap.point, tap.branch, tap.params)
    return out


def select_taps(
    model: nn.Module,
    names: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    need_branch: bool = False,
    relabel: Mapping[str, str] | None = None,
) -> OrderedDict[str, Tap]:
    """The model's points in forward order, restricted to ``names`` (fnmatch patterns over the points,
    or over any module name) and to ``kinds``, after ``relabel`` ({pattern: kind}) set their kinds.
    ``need_branch`` keeps points with a lesion branch (asked-for names without one raise).
    Raises `InputError` naming what is available."""
    keep = None if kinds is None else {resolve_kind(k) for k in kinds}
    try:
        everything = model_layers(model, relabel)
    except InputError:
        if names is None:
            raise
        everything = OrderedDict()  # no blocks found: the patterns may still name modules
    taps = everything
    if names is not None:
        picked = {n: t for n, t in everything.items() if any(fnmatch.fnmatchcase(n, p) for p in names)}
        loose = [p for p in names if not any(fnmatch.fnmatchcase(n, p) for n in everything)]
        extra = _relabel(_module_taps(model, loose, everything), relabel or {})
        unknown = [p for p in loose if not any(fnmatch.fnmatchcase(n, p) for n in extra)]
        if unknown:
            raise InputError(
                f"layer(s) {unknown} match no point or module of {type(model).__name__}; "
                f"choose from {list(everything)} (or any module name)"
            )
        if extra:
            merged = {**picked, **extra}
            taps = OrderedDict((n, merged[n]) for n in _forward_order(model, merged))
        else:
            taps = OrderedDict((n, t) for n, t in everything.items() if n in picked)
    if keep is not None:
        taps = OrderedDict((n, t) for n, t in taps.items() if t.kind in keep)
    if need_branch:
        missing = [n for n, t in taps.items() if t.branch is None]
        if names is not None and missing:
            raise InputError(f"layer(s) {missing} have no residual branch to lesion; drop them from `layers`")
        taps = OrderedDict((n, t) for n, t in taps.items() if t.branch is not None)
    if not taps:
        raise InputError(
            f"no analysis layers left in {type(model).__name__} after layers={names}, kinds={kinds}; "
            f"available: {[(n, t.kind) for n, t in everything.items()]}"
        )
    return taps


@dataclass(frozen=True)
class LayerOptions:
    """Which points a per-layer analysis looks at.

    Args:
        layers: name patterns (``fnmatch``) over the model's points, or naming any of its modules
            (None: every point of the chosen kinds).
        kinds: the kinds to keep (a sequence; ignored when ``layers`` is given), or a mapping
            {name pattern: kind} that relabels points (then the default kinds are kept). Kinds:
            stem, conv, msa (self-attention; alias "attention"), mlp, other, norm, pool, head.
    """

    layers: tuple[str, ...] | None = None
    kinds: tuple[str, ...] | dict[str, str] = DEFAULT_KINDS

    def __post_init__(self) -> None:
        if self.layers is not None:
            if isinstance(self.layers, str) or not all(isinstance(p, str) for p in self.layers):
                raise InputError(f"layers={self.layers!r}: give a list of name patterns, e.g. ['layer1.*']")
            object.__setattr__(self, "layers", tuple(self.layers))
        if isinstance(self.kinds, Mapping):
            object.__setattr__(self, "kinds", {str(p): resolve_kind(k) for p, k in self.kinds.items()})
        else:
            if isinstance(self.kinds, str):
                raise InputError(f"kinds={self.kinds!r}: give a list of kinds or a {{pattern: kind}} mapping")
            object.__setattr__(self, "kinds", tuple(resolve_kind(k) for k in self.kinds))

    def select(self, model: nn.Module, need_branch: bool = False) -> OrderedDict[str, Tap]:
        """`select_taps` with these options (raises `InputError` before any forward pass)."""
        relabel = self.kinds if isinstance(self.kinds, dict) else None
        keep = None if self.layers or need_branch else (DEFAULT_KINDS if relabel else self.kinds)
        return select_taps(model, self.layers, keep, need_branch=need_branch, relabel=relabel)
