"""AnalysisCallback scheduling: when each `at` point runs, on which device, and error handling."""

import lightning.pytorch as pl
import pytest

from alternet_pl.analysis.records import ScalarRecord
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisFailure
from alternet_pl.callbacks.options import AnalysisData, Schedule
from alternet_pl.data import SyntheticDataModule
from alternet_pl.training.module import ImageClassifier, Network
from alternet_pl.training.recipe import Recipe, TargetOptions
from alternet_pl.training.schedules import LRSchedule

ONE_BATCH = AnalysisData(num_batches=1)


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
        return ScalarRecord(values={"epoch": float(context.epoch)})


class Order(pl.Callback):
    def __init__(self, events: list):
        self.events = events

    def on_train_end(self, trainer, pl_module):
        self.events.append(("on_train_end",))

    def on_fit_end(self, trainer, pl_module):
        self.events.append(("on_fit_end",))


def _fit(tmp_path, callbacks, warmup_epochs=1.5, epochs=3):
    dm = SyntheticDataModule(num_train=32, num_val=16, batch_size=16)
    recipe = Recipe(
        schedule=LRSchedule(warmup_epochs=warmup_epochs), targets=TargetOptions(mixup_alpha=0, cutmix_alpha=0)
    )
    module = ImageClassifier(Network("resnet_cifar_micro"), recipe=recipe)
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
    probe = Probe(events, schedule=Schedule(at=("warmup_end", "fit_end")), data=ONE_BATCH)
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
    _fit(tmp_path, [Probe(events, schedule=Schedule(at=(), every_n_epochs=2), data=ONE_BATCH)], epochs=4)
    assert [e[1] for e in events] == [2, 4]


def test_failure_is_logged_on_one_process_and_raised_when_strict(tmp_path):
    probe = Probe([], fail=True, data=ONE_BATCH)
    trainer = _fit(tmp_path, [probe], epochs=1)
    assert trainer.state.finished
    assert probe.failures == [AnalysisFailure("epoch", 1, "RuntimeError: probe failure")]
    with pytest.raises(RuntimeError, match="probe failure"):
        _fit(tmp_path / "strict", [Probe([], fail=True, strict=True, data=ONE_BATCH)], epochs=1)


def test_state_dict_holds_what_ran_and_failed_and_a_restored_callback_skips_it(tmp_path):
    events = []
    probe = Probe(events, schedule=Schedule(at=("fit_start", "fit_end"), every_n_epochs=1), data=ONE_BATCH)
    _fit(tmp_path, [probe], epochs=2)
    state = probe.state_dict()
    assert state == {"done": [["epoch", 1], ["epoch", 2], ["fit_start", 0]], "failures": []}
    restored = Probe([], schedule=probe.schedule, data=ONE_BATCH)
    restored.load_state_dict({**state, "failures": [{"when": "epoch", "epoch": 1, "error": "x"}]})
    assert restored.done == probe.done and restored.failures == [AnalysisFailure("epoch", 1, "x")]
    _fit(tmp_path / "again", [restored], epochs=2)
    assert restored.events == []  # everything had already run: nothing twice


def test_two_analyses_of_one_class_keep_separate_states(tmp_path):
    a, b = Probe([], data=ONE_BATCH), Probe([], data=AnalysisData(num_batches=2))
    assert a.state_key != b.state_key and a.state_key == Probe([], data=ONE_BATCH).state_key
    pl.Trainer(callbacks=[a, b], logger=False, default_root_dir=tmp_path)  # Lightning checks the keys


def test_options_reject_bad_values_with_one_line():
    for make, match in (
        (lambda: AnalysisData(split="test"), "AnalysisData: split='test'"),
        (lambda: AnalysisData(num_batches=0), "AnalysisData: num_batches=0"),
        (lambda: Schedule(at=("end",)), "Schedule: at='end'"),
        (lambda: Schedule(every_n_epochs=0), "Schedule: every_n_epochs=0"),
    ):
        with pytest.raises(ValueError, match=match):
            make()
    with pytest.raises(TypeError, match="AnalysisData"):
        Probe([], data={"num_batches": 1})
