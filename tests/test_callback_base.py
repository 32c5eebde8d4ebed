"""AnalysisCallback scheduling: when each `at` point runs, on which device, and error handling."""

import lightning.pytorch as pl
import pytest

from alternet_pl.callbacks.base import AnalysisCallback, AnalysisResult
from alternet_pl.data import SyntheticDataModule
from alternet_pl.module import ImageClassifier


class Probe(AnalysisCallback):
    """Records when it runs (no `name`: not registered as an analysis)."""

    def __init__(self, events: list, fail: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.events, self.fail = events, fail

    def compute(self, model, loss_fn, batches, context):
        if self.fail:
            raise RuntimeError("probe failure")
        trainer = context.module.trainer
        self.events.append(
            ("analysis", context.epoch, trainer.state.stage, next(model.parameters()).device.type)
        )
        return AnalysisResult(scalars={"epoch": float(context.epoch)})


class Order(pl.Callback):
    def __init__(self, events: list):
        self.events = events

    def on_train_end(self, trainer, pl_module):
        self.events.append(("on_train_end",))

    def on_fit_end(self, trainer, pl_module):
        self.events.append(("on_fit_end",))


def _fit(tmp_path, callbacks, warmup_epochs=1.5, epochs=3):
    dm = SyntheticDataModule(num_train=32, num_val=16, batch_size=16)
    module = ImageClassifier(
        model="resnet_cifar_micro", warmup_epochs=warmup_epochs, mixup_alpha=0, cutmix_alpha=0
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    return trainer


def test_schedule_and_fit_end_before_teardown(tmp_path):
    events = []
    probe = Probe(events, at=["warmup_end", "fit_end"], num_batches=1)
    _fit(tmp_path, [probe, Order(events)])
    analyses = [e for e in events if e[0] == "analysis"]
    # warm-up of 1.5 epochs ends during epoch 2; fit end after epoch 3, still in the training stage
    assert [e[1] for e in analyses] == [2, 3]
    assert all(e[2] == "train" for e in analyses)
    assert events.index(analyses[-1]) < events.index(("on_fit_end",))  # before the strategy's teardown
    written = sorted(p.name for p in (tmp_path / "analysis").iterdir())
    assert written == ["epoch=002.json", "epoch=003.json"]


def test_every_n_epochs(tmp_path):
    events = []
    _fit(tmp_path, [Probe(events, at=[], every_n_epochs=2, num_batches=1)], epochs=4)
    assert [e[1] for e in events] == [2, 4]


def test_failure_is_logged_on_one_process_and_raised_when_strict(tmp_path):
    probe = Probe([], fail=True, at=["fit_end"], num_batches=1)
    trainer = _fit(tmp_path, [probe], epochs=1)
    assert trainer.state.finished and probe.failures == [1]
    with pytest.raises(RuntimeError, match="probe failure"):
        _fit(
            tmp_path / "strict", [Probe([], fail=True, strict=True, at=["fit_end"], num_batches=1)], epochs=1
        )
