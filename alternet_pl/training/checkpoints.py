"""Checkpoint files: read without running code, written atomically.

`load_checkpoint` is the one reader of checkpoint files in the project: `torch.load(...,
weights_only=True)`, which only rebuilds tensors and plain containers, with exactly the extra
types Lightning's checkpoints need allowed (`LIGHTNING_SAFE_GLOBALS`). A file that asks for any
other Python object (a pickled callable, a module, ...) is refused with an `InputError` naming the
file, and nothing in it runs. `SafeCheckpointIO` makes the Trainer use the same reader when it
resumes (`fit --ckpt_path`) and write each checkpoint through a temporary file and a rename, so a
crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from alternet_pl.errors import InputError, MissingInputError

__all__ = [
    "LIGHTNING_SAFE_GLOBALS",
    "LastCheckpoint",
    "SafeCheckpointIO",
    "atomic_torch_save",
    "completed_epochs",
    "load_checkpoint",
    "load_state_dict_into",
]

#: Types beyond torch's default weights-only allow-list that our Lightning checkpoints hold.
#: Found by saving real checkpoints of `fit` (AdamW and SGD, 32-true and bf16-mixed, the light
#: analysis suite, ModelCheckpoint, the non-finite-loss guard) and loading them: every entry is a
#: tensor, an OrderedDict or a plain Python container / number / string, so the list is empty.
#: tests/test_checkpoints.py re-checks it on a fresh checkpoint; add a type here only if that
#: test shows one is needed.
LIGHTNING_SAFE_GLOBALS: tuple[Any, ...] = ()


def _is_local(path: str | os.PathLike) -> bool:
    return "://" not in str(path)


def _first_sentence(err: BaseException) -> str:
    """The informative part of a torch / zip error, in one line."""
    text = str(err).strip() or type(err).__name__
    text = text.split("WeightsUnpickler error: ")[-1].strip()
    return text.splitlines()[0].split(". ")[0].rstrip(".")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint (or any torch-saved dict) without unpickling code.

    Returns the checkpoint dict. Raises `MissingInputError` when the file does not exist and
    `InputError` when it holds Python objects other than tensors and plain containers (refused:
    nothing in it runs), is truncated, is not a torch file, or is not a dict.
    """
    path = Path(path) if _is_local(path) else path
    if isinstance(path, Path) and not path.is_file():
        raise MissingInputError(
            f"checkpoint {path} not found; pass an existing .ckpt file (each run keeps "
            "runs/<experiment>/<version>/checkpoints/last.ckpt)"
        )
    try:
        with torch.serialization.safe_globals(list(LIGHTNING_SAFE_GLOBALS)):
            if isinstance(path, Path):
                checkpoint = torch.load(path, map_location=map_location, weights_only=True)
            else:
                with get_filesystem(path).open(path, "rb") as fh:
                    checkpoint = torch.load(fh, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found:
            raise InputError(
                f"checkpoint {path} holds Python code ({found.group(1)}), which a checkpoint of weights "
                "never needs; refused, nothing in it was run. Use a checkpoint written by alternet_pl / "
                "Lightning, or re-save only its tensors (state_dict) from a copy you trust"
            ) from None
        raise InputError(
            f"checkpoint {path} is corrupt: damaged or not a torch checkpoint ({_first_sentence(err)}); "
            "use an intact copy (the run's checkpoints/last.ckpt, or download it again)"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise InputError(
            f"checkpoint {path} is corrupt: truncated or not a torch checkpoint ({_first_sentence(err)}); "
            "use an intact copy (the run's checkpoints/last.ckpt, or download it again)"
        ) from None
    if not isinstance(checkpoint, dict):
        raise InputError(
            f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict; pass a Lightning "
            "checkpoint (.ckpt) or a saved state_dict"
        )
    return checkpoint


def load_state_dict_into(
    module: torch.nn.Module, checkpoint: dict[str, Any], path: str | os.PathLike
) -> None:
    """Load `checkpoint["state_dict"]` (or the dict itself) into `module`, strictly.

    Raises `InputError` naming the file when the weights belong to another architecture.
    """
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            f"checkpoint {path} has no 'state_dict' of tensors (keys: {sorted(checkpoint)[:8]}); pass a "
            "Lightning checkpoint written by `fit`"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        arch = (getattr(module, "hparams", {}).get("network") or {}).get("name", type(module).__name__)
        missing = [k for k in module.state_dict() if k not in state]
        unexpected = [k for k in state if k not in module.state_dict()]
        raise InputError(
            f"checkpoint {path} does not match the architecture {arch!r} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected keys, e.g. {(missing or unexpected or ['shape mismatch'])[0]}; "
            f"{str(err).splitlines()[-1].strip()[:120]}); pass the config.yaml of the run that wrote it"
        ) from None


def completed_epochs(checkpoint: dict[str, Any]) -> int:
    """Epochs completed when a Lightning checkpoint was written: `epoch + 1` for one written at the end
    of an epoch (Lightning stores the 0-based index of the running epoch), `epoch` mid-epoch.

    This is the label `fit` gives analyses run on the same weights (`epoch=NNN`).
    """
    epoch = int(checkpoint.get("epoch", 0))
    loops = checkpoint.get("loops") or {}
    progress = (loops.get("fit_loop") or {}).get("epoch_loop.batch_progress") or {}
    return epoch + 1 if progress.get("is_last_batch") else epoch


def atomic_torch_save(
    obj: Any, path: str | os.PathLike, save: Callable[[Any, Any], None] | None = None
) -> None:
    """`torch.save` (or `save(obj, fh)`) through a temporary file in the same folder, fsync, then
    `os.replace`. A crash at any point leaves the previous file or the new one, never a partial file.
    """
    save = save or torch.save
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic local writes; every read through `load_checkpoint`.

    Pass it as `Trainer(plugins=[SafeCheckpointIO()])`; `fit` does. Reads ignore the Trainer's
    `weights_only` argument: they are always weights-only. Remote (fsspec URL) writes fall back
    to Lightning's own transactional writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location)


class LastCheckpoint(ModelCheckpoint):
    """`<dirpath>/last.ckpt`, rewritten at the very end of every epoch and, with `every_n_steps`, also
    after every N-th training step.

    Lightning refuses `every_n_epochs` together with `every_n_train_steps`; this callback asks for the
    steps and adds the epoch end itself. A step that ends an epoch is left to the epoch-end save, which
    runs after validation and the analyses' epoch-end work, so their state is in the file.
    """

    def __init__(self, dirpath: str, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise InputError(
                f"--checkpoint_every_n_steps {every_n_steps}: give a number of training steps >= 1 "
                "(or leave it out: last.ckpt is written at every epoch end)"
            )
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            every_n_train_steps=every_n_steps,
            every_n_epochs=None if every_n_steps else 1,
            enable_version_counter=False,
            save_on_train_epoch_end=True,
        )
        self._every_n_epochs = 1  # the epoch end as well as the steps

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch-end save follows
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
