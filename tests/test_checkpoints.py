"""Checkpoints: read weights-only (a pickled callable is refused and never runs), atomic writes,
clear errors for truncated / random / foreign files, and Lightning's resume path uses the same reader."""

import os
import pickle
import zipfile
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from alternet_pl.data import SyntheticDataModule
from alternet_pl.errors import InputError, MissingInputError
from alternet_pl.training.checkpoints import (
    SafeCheckpointIO,
    atomic_torch_save,
    load_checkpoint,
    load_state_dict_into,
)
from alternet_pl.training.module import ImageClassifier, Network
from alternet_pl.training.recipe import OptimizerOptions, Recipe, TargetOptions
from alternet_pl.training.schedules import LRSchedule


class _WritesMarker:
    """Unpickling this object would create `path` (what an attack would do, harmlessly)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


NO_MIXING = TargetOptions(mixup_alpha=0, cutmix_alpha=0)


def _module(**groups) -> ImageClassifier:
    recipe = Recipe(**{"targets": NO_MIXING, "schedule": LRSchedule(warmup_epochs=0), **groups})
    return ImageClassifier(Network("alternet_cifar_micro"), num_classes=4, recipe=recipe)


def _trainer(root: Path, **kw) -> pl.Trainer:
    options = dict(
        default_root_dir=str(root),
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[SafeCheckpointIO()],
    )
    return pl.Trainer(**{**options, **kw})


def _data() -> SyntheticDataModule:
    return SyntheticDataModule(num_train=32, num_val=16, num_classes=4, batch_size=8, hflip=0.0)


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint written by a real (tiny) fit: SGD, ModelCheckpoint with monitor and last."""
    root = tmp_path_factory.mktemp("fit")
    pl.seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=str(root / "checkpoints"), monitor="val/acc1", mode="max", save_last=True)
    trainer = _trainer(root, callbacks=[ckpt])
    trainer.fit(_module(optimizer=OptimizerOptions(name="sgd")), datamodule=_data())
    return root / "checkpoints" / "last.ckpt"


def test_real_checkpoint_loads_weights_only_with_the_listed_globals(real_checkpoint):
    # plain torch.load(weights_only=True) must accept it: our allow-list adds nothing torch lacks
    raw = torch.load(real_checkpoint, map_location="cpu", weights_only=True)
    checkpoint = load_checkpoint(real_checkpoint)
    assert set(raw) == set(checkpoint)
    assert {"state_dict", "optimizer_states", "lr_schedulers", "callbacks", "loops"} <= set(checkpoint)
    module = _module(optimizer=OptimizerOptions(name="sgd"))
    load_state_dict_into(module, checkpoint, real_checkpoint)
    for key, value in module.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][key])


def _evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "payload": _WritesMarker(str(marker))}, path)
    # the file really holds the callable: the unsafe reader would run it
    archive = zipfile.ZipFile(path)
    assert b"touch" in archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return path, marker


def test_checkpoint_holding_code_is_refused_and_nothing_runs(tmp_path):
    path, marker = _evil_checkpoint(tmp_path)
    with pytest.raises(InputError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "refused" in str(err.value)
    assert not marker.exists()
    # control (so the test can fail): the file holds the payload (checked in _evil_checkpoint), and the
    # call its pickle would make does create the marker; run directly, never by unpickling
    call, args = _WritesMarker(str(marker)).__reduce__()
    call(*args)
    assert marker.exists()


def test_lightning_resume_path_refuses_code_too(tmp_path):
    path, marker = _evil_checkpoint(tmp_path)
    with pytest.raises(InputError, match="refused"):
        _trainer(tmp_path).fit(_module(), datamodule=_data(), ckpt_path=str(path))
    assert not marker.exists()


def test_resume_through_safe_io_restores_the_run(real_checkpoint, tmp_path):
    trainer = _trainer(tmp_path, max_epochs=2)
    module = _module(optimizer=OptimizerOptions(name="sgd"))
    trainer.fit(module, datamodule=_data(), ckpt_path=str(real_checkpoint))
    assert trainer.current_epoch == 2 and trainer.global_step == 4  # 2 steps restored + 2 new


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "pickle", "list"])
def test_damaged_checkpoint_gives_one_clear_error(kind, real_checkpoint, tmp_path):
    path = tmp_path / f"{kind}.ckpt"
    data = real_checkpoint.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        noise = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
        path.write_bytes(noise.byte().numpy().tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": 1}))
    else:
        torch.save([1, 2, 3], path)
    with pytest.raises(InputError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message


def test_missing_checkpoint(tmp_path):
    with pytest.raises(MissingInputError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_checkpoint_of_another_architecture_names_file_and_architecture(real_checkpoint):
    other = ImageClassifier(Network("resnet_cifar_micro"), num_classes=4, recipe=Recipe(targets=NO_MIXING))
    with pytest.raises(InputError) as err:
        load_state_dict_into(other, load_checkpoint(real_checkpoint), real_checkpoint)
    assert str(real_checkpoint) in str(err.value) and "resnet_cifar_micro" in str(err.value)


def test_crash_mid_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = SafeCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)

    def crash_after_half(obj, fh):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # the process dies in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"epoch": 2}, path, save=crash_after_half)
    monkeypatch.setattr(torch, "save", crash_after_half)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    checkpoint = io.load_checkpoint(path)
    assert checkpoint["epoch"] == 1 and torch.equal(checkpoint["state_dict"]["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temporary file left behind


class _GoesNaN(ImageClassifier):
    """Its loss turns NaN at global step `nan_at` (a stand-in for a diverging run)."""

    nan_at = 3

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step == self.nan_at else loss


def test_nonfinite_loss_stops_with_one_message_and_keeps_the_last_good_checkpoint(tmp_path):
    from alternet_pl.training.guards import NonFiniteLossError, NonFiniteLossGuard

    pl.seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "checkpoints"), every_n_train_steps=2, save_last=True)
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[ckpt, NonFiniteLossGuard()])
    module = _GoesNaN(Network("alternet_cifar_micro"), num_classes=4, recipe=Recipe(targets=NO_MIXING))
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit(module, datamodule=_data())
    message = str(err.value)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert "\n" not in message and "nan at step 3 (epoch 1)" in message
    assert "last finite loss" in message and "at step 2" in message and str(last) in message
    saved = load_checkpoint(last)
    assert saved["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    # the weights in memory were not touched by the bad step either
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_epoch_label_of_a_checkpoint_matches_fit(real_checkpoint):
    """`fit` labels analyses after the first epoch `epoch=001`; `analyze` on the checkpoint written at
    that point must say the same (Lightning stores the 0-based index of the running epoch)."""
    from alternet_pl.training.checkpoints import completed_epochs

    checkpoint = load_checkpoint(real_checkpoint)
    assert checkpoint["epoch"] == 0 and completed_epochs(checkpoint) == 1
    mid = {**checkpoint, "loops": {"fit_loop": {"epoch_loop.batch_progress": {"is_last_batch": False}}}}
    assert completed_epochs(mid) == 0  # a mid-epoch checkpoint: the epoch is not complete


def test_analysis_on_nonfinite_weights_writes_an_error_record_not_numbers(tmp_path):
    from alternet_pl.callbacks import VarianceCallback
    from alternet_pl.callbacks.base import NonFiniteResult
    from alternet_pl.callbacks.options import AnalysisData
    from alternet_pl.runs import read_error_records

    module = _module()
    with torch.no_grad():
        next(module.model.parameters()).view(-1)[0] = float("nan")
    callback = VarianceCallback(data=AnalysisData(num_batches=1, batch_size=8))
    with pytest.raises(NonFiniteResult, match="NaN/Inf"):
        callback.run(module, _data(), tmp_path, epoch=1)
    assert not (tmp_path / "analysis" / "variance" / "epoch=001.json").exists()  # no numbers written
    trainer = _trainer(tmp_path, enable_checkpointing=False)  # through the Lightning hook: a record
    trainer.strategy.connect(module)
    callback._maybe_run(trainer, module, "epoch", 1)
    (record,) = read_error_records(tmp_path)
    assert record.kind == "nonfinite" and record.analysis == "variance" and "Traceback" in record.traceback
    assert str(record.path).endswith("analysis/variance/epoch=001.error.json") and record.epoch == 1


def test_nonfinite_loss_names_the_newest_checkpoint_not_the_best(tmp_path):
    """A best-checkpoint callback first in the list (what `trainer.checkpoint_callback` returns) whose
    file is older than last.ckpt: the guard must offer the newer last.ckpt."""
    from alternet_pl.training.checkpoints import LastCheckpoint
    from alternet_pl.training.guards import NonFiniteLossError, NonFiniteLossGuard

    pl.seed_everything(0)
    best = ModelCheckpoint(dirpath=str(tmp_path / "checkpoints"), monitor="step", mode="min", filename="best")
    last = LastCheckpoint(str(tmp_path / "checkpoints"))
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[best, last, NonFiniteLossGuard()])
    module = _GoesNaN(Network("alternet_cifar_micro"), num_classes=4, recipe=Recipe(targets=NO_MIXING))
    module.nan_at = 5  # epoch 3; best.ckpt stays the step-2 one, last.ckpt is from step 4
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit(module, datamodule=_data())
    assert trainer.checkpoint_callback is best and best.best_model_path.endswith("best.ckpt")
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert f"Last good checkpoint: {tmp_path / 'checkpoints' / 'last.ckpt'};" in str(err.value)


def test_last_checkpoint_every_n_steps_writes_at_steps_and_epoch_ends(tmp_path):
    """`--checkpoint_every_n_steps` (Lightning refuses every_n_epochs with every_n_train_steps): written
    after steps 3 (mid-epoch) and at each epoch end (steps 2, 4), never twice for one step."""
    from alternet_pl.training.checkpoints import LastCheckpoint

    saved = []

    class Record(SafeCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            saved.append((checkpoint["global_step"], Path(path).name))
            super().save_checkpoint(checkpoint, path, storage_options)

    pl.seed_everything(0)
    last = LastCheckpoint(str(tmp_path / "checkpoints"), every_n_steps=3)
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[last], plugins=[Record()])
    trainer.fit(_module(), datamodule=_data())
    assert saved == [(2, "last.ckpt"), (3, "last.ckpt"), (4, "last.ckpt"), (6, "last.ckpt")]
    with pytest.raises(InputError, match="checkpoint_every_n_steps 0"):
        LastCheckpoint(str(tmp_path), every_n_steps=0)
