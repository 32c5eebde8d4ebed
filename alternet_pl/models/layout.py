"""Block layouts as data: one string of 'C' (conv block) / 'M' (MSA block) letters per stage.

``place_msas`` is the official placement rule (a stage of n blocks with k MSAs is ``C*(n-2k) + (CM)*k``);
``resolve_layout`` checks a user layout against the stage depths, so a wrong letter or length is one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alternet_pl.errors import InputError

__all__ = [
    "STEMS",
    "check_arguments",
    "check_style",
    "check_window",
    "place_msas",
    "resolve_layout",
]

#: stem -> (reduction, default window, default img size)
STEMS = {"cifar": (1, 4, 32), "imagenet": (4, 7, 224)}


def place_msas(depths: Sequence[int], msa_per_stage: Sequence[int]) -> tuple[str, ...]:
    """The official placement: a stage of n blocks with k MSAs is ``"C" * (n - 2k) + "CM" * k``."""
    if len(msa_per_stage) != len(depths):
        raise InputError(
            f"msa_per_stage={tuple(msa_per_stage)} has {len(msa_per_stage)} entries; it needs one per "
            f"stage, {len(depths)} for depths={tuple(depths)}"
        )
    layout = []
    for i, (n, k) in enumerate(zip(depths, msa_per_stage)):
        if not isinstance(k, int) or k < 0 or 2 * k > n:
            raise InputError(
                f"msa_per_stage[{i}]={k!r} does not fit stage {i} of {n} blocks: the rule "
                f"C*(n-2k)+(CM)*k needs 2k <= n, so valid values are 0..{n // 2}"
            )
        layout.append("C" * (n - 2 * k) + "CM" * k)
    return tuple(layout)


def resolve_layout(
    depths: Sequence[int],
    layout: Sequence[str] | None = None,
    msa_per_stage: Sequence[int] | None = None,
) -> tuple[str, ...]:
    """Check ``layout`` (or build it from ``msa_per_stage``) against ``depths``; all-conv if both None."""
    if layout is not None and msa_per_stage is not None:
        raise InputError("pass either layout=[...] or msa_per_stage=(...), not both")
    if msa_per_stage is not None:
        return place_msas(depths, msa_per_stage)
    if layout is None:
        return tuple("C" * n for n in depths)
    if isinstance(layout, str) or len(layout) != len(depths):
        raise InputError(
            f"layout={layout!r} must be a list of {len(depths)} strings, one per stage "
            f"(depths={tuple(depths)}), e.g. {list(place_msas(depths, [0] * len(depths)))}"
        )
    for i, (s, n) in enumerate(zip(layout, depths)):
        if not isinstance(s, str):
            raise InputError(f"layout[{i}]={s!r} must be a string of 'C' and 'M' letters")
        bad = sorted(set(s) - {"C", "M"})
        if bad:
            raise InputError(
                f"layout[{i}]={s!r} has letter(s) {bad}; "
                "valid letters are 'C' (conv block) and 'M' (MSA block)"
            )
        if len(s) != n:
            raise InputError(
                f"layout[{i}]={s!r} has {len(s)} blocks but stage {i} has {n} (depths={tuple(depths)}); "
                "give each stage exactly its block count, or pass depths=... as well"
            )
    return tuple(layout)


def check_arguments(
    block: str, stem: str, block_style: str, depths: Sequence[int], **per_stage: Sequence[Any]
) -> None:
    """One line for a wrong block, stem or style name, a bad depth, or a per-stage list of another length."""
    if block not in ("basic", "bottleneck"):
        raise InputError(f"block={block!r}; valid values are 'basic' and 'bottleneck'")
    if stem not in STEMS:
        raise InputError(f"stem={stem!r}; valid values are {sorted(STEMS)}")
    if block_style not in ("preact", "postact"):
        raise InputError(f"block_style={block_style!r}; valid values are 'preact' and 'postact'")
    depths = tuple(depths)
    if not depths or any(not isinstance(n, int) or n < 1 for n in depths):
        raise InputError(f"depths={depths!r} must be positive block counts, one per stage")
    for name, seq in per_stage.items():
        if len(seq) != len(depths):
            raise InputError(f"{name}={tuple(seq)} needs one entry per stage ({len(depths)}, from depths)")


def check_window(
    window: int, hw: Sequence[int], stage: int, letters: str, img_hw: Sequence[int], stem: str
) -> None:
    """MSA windows must tile the stage's feature map exactly (checked at construction, not at forward)."""
    if "M" in letters and (hw[0] % window or hw[1] % window):
        raise InputError(
            f"window_size={window} does not divide the {hw[0]}x{hw[1]} feature map of stage {stage} "
            f"(layout[{stage}]={letters!r}, img_size={img_hw[0]}x{img_hw[1]}, stem={stem!r}); use a "
            f"window that divides {hw[0]}x{hw[1]}, another img_size, or no 'M' in that stage"
        )


def check_style(block_style: str, layout: Sequence[str]) -> None:
    """The post-activation ResNet baseline takes no MSA blocks."""
    if block_style == "postact" and any("M" in s for s in layout):
        raise InputError(
            f"block_style='postact' is the post-activation ResNet baseline and takes no MSA blocks, "
            f"but the layout is {list(layout)}; use block_style='preact' for AlterNets"
        )
