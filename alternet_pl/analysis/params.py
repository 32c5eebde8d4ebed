"""The one parameter selection of the analyses: trainable parameters, optionally a named subset."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from alternet_pl.errors import InputError

__all__ = ["ParamSelection", "trainable_parameters"]

#: None (every trainable parameter), a name prefix, a module, or a sequence of them
ParamSelection = str | nn.Module | Sequence[str | nn.Module] | None


def trainable_parameters(model: nn.Module, select: ParamSelection = None) -> dict[str, nn.Parameter]:
    """{name: parameter} of the parameters that require grad, in `named_parameters` order.

    `select` narrows them to name prefixes (``"blocks.0"`` matches ``blocks.0.attn.qkv.weight``, not
    ``blocks.01...``) and/or the parameters of given modules. Returns a non-empty dict. Raises
    TypeError for a selection that is neither str nor module, ValueError when nothing is selected.
    """
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if select is not None:
        items = [select] if isinstance(select, str | nn.Module) else list(select)
        bad = [type(x).__name__ for x in items if not isinstance(x, str | nn.Module)]
        if bad:
            raise TypeError(f"parameter selection must be name prefixes (str) or nn.Modules, got {bad}")
        prefixes = [x.rstrip(".") for x in items if isinstance(x, str)]
        ids = {id(p) for x in items if isinstance(x, nn.Module) for p in x.parameters()}
        named = {
            n: p
            for n, p in named.items()
            if id(p) in ids or any(n == s or n.startswith(s + ".") for s in prefixes)
        }
    if not named:
        example = ", ".join(n for n, _ in list(model.named_parameters())[:4]) or "none"
        raise InputError(
            f"no trainable parameters selected by {select!r} (requires_grad=True); names look like: {example}"
        )
    return named
