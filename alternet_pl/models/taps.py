"""`Tap`: what `model.analysis_layers()` returns per named layer (kind, hook point, lesion branch)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from alternet_pl.errors import InputError

KINDS = ("stem", "conv", "msa", "mlp", "other", "norm", "pool", "head")


@dataclass(frozen=True)
class Tap:
    """One analysable layer.

    module: the module to hook.
    kind: one of KINDS; plots colour by it.
    point: "output" captures the module's output (forward hook); "input" captures its first
        positional input (forward pre-hook), e.g. a ViT block's state after the attention
        residual step is the input of its ``norm2``.
    branch: the residual-branch module whose output a lesion replaces by zeros (the block then
        acts as its shortcut); None when the layer has no residual branch.
    params: the modules whose parameters make up this layer's block (the block-wise Hessian);
        None: those of ``branch``. Needed where the branch module itself holds no parameters
        (timm's ``drop_path1`` / ``drop_path2``).
    lesion: how a lesion removes the branch: "zero" replaces ``branch``'s output by zeros; "skip"
        replaces it by ``branch``'s input (``branch`` is then the whole block, found to have an
        identity shortcut).
    """

    module: nn.Module
    kind: str
    point: str = "output"
    branch: nn.Module | None = None
    params: tuple[nn.Module, ...] | None = None
    lesion: str = "zero"

    def block_modules(self) -> tuple[nn.Module, ...]:
        """The modules holding this block's parameters (empty when it has none)."""
        if self.params is not None:
            return self.params
        return () if self.branch is None else (self.branch,)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"Tap kind {self.kind!r} is not one of {KINDS}")
        if self.point not in ("output", "input"):
            raise InputError(f"Tap point {self.point!r} must be 'output' or 'input'")
        if self.lesion not in ("zero", "skip"):
            raise InputError(f"Tap lesion {self.lesion!r} must be 'zero' or 'skip'")
