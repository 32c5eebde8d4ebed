"""Atomic file writers (and the JSON reader) for every file the package writes: never a half-written file.

Records (`alternet_pl.analysis.records`) write their `<stem>.json|.npz` through these, the callbacks
their figures, `fit` its `config.yaml` and the report its pages; where each file goes in a run
directory is `alternet_pl.runs`'s business."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_json", "write_figure", "write_json", "write_npz", "write_text"]


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) atomically; returns the path."""
    path = Path(path)
    data = text.encode()
    _atomic_write(path, lambda fh: fh.write(data))
    return path


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write `data` as indented JSON (arrays and tensors as lists, NaN as null, inf as "inf")."""
    return write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=False))


def write_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    """Write arrays (numpy or torch) as an uncompressed .npz atomically; returns the path."""
    path = Path(path)
    arrays = {
        k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in arrays.items()
    }
    _atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return path


def write_figure(path: str | os.PathLike, figure) -> Path:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    _atomic_write(
        path,
        lambda fh: figure.savefig(fh, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight"),
    )
    plt.close(figure)
    return path


def read_json(path: str | os.PathLike) -> dict:
    """The JSON document at `path`. Raises OSError / json.JSONDecodeError as `json.load` does."""
    with open(path) as fh:
        return json.load(fh)
