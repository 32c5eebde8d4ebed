"""The one progress-bar rule of the analyses: a bar on rank 0 of an interactive terminal, else none."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

from alternet_pl.analysis.dist import rank_and_world

__all__ = ["progress", "quiet"]


def quiet() -> bool:
    """True when bars would only clutter: stderr is not a terminal (logs, CI) or this is not rank 0."""
    return not sys.stderr.isatty() or rank_and_world()[0] != 0


def progress(iterable: Iterable[Any], desc: str = "", total: int | None = None, enabled: bool = True) -> tqdm:
    """`iterable` wrapped in a transient tqdm bar, disabled when `quiet()` or not `enabled`."""
    return tqdm(iterable, total=total, desc=desc or None, leave=False, disable=not enabled or quiet())
