"""What reaches W&B, read back from the files of real offline runs: an analysed fit's scalars, images,
array tables and architecture tags, and the report's comparison run; a W&B failure stops nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest

from alternet_pl.callbacks.lesion import LesionCallback
from alternet_pl.callbacks.options import AnalysisData
from alternet_pl.callbacks.robustness import FreqNoiseCallback
from alternet_pl.callbacks.variance import VarianceCallback
from alternet_pl.data import SyntheticDataModule
from alternet_pl.loggers import SafeWandbLogger
from alternet_pl.loggers import tables as wandb_tables
from alternet_pl.training.module import ImageClassifier, Network
from alternet_pl.training.recipe import Recipe, TargetOptions
from alternet_pl.training.schedules import LRSchedule

PLAIN = Recipe(targets=TargetOptions(mixup_alpha=0, cutmix_alpha=0), schedule=LRSchedule(warmup_epochs=0))


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")  # conftest disables W&B for every other test
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def _offline_run(root: Path) -> Path:
    runs = sorted(root.rglob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def _records(run_dir: Path) -> list:
    """Every record of the run's .wandb transaction log (W&B's LevelDB-style log: a 7-byte header,
    then 32 KiB blocks of chunks with a 7-byte header each: crc32, little-endian length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _finished_records(run_dir: Path, timeout: float = 60.0) -> list:
    """The records once W&B's service has written the run's exit record (it writes asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        records = _records(run_dir)
        if any(r.HasField("exit") for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def _summary(run_dir: Path) -> dict:
    """The last value of every logged key, flattened ("<key>/<field>" for images and tables)."""
    out = {}
    for record in _finished_records(run_dir):
        items = record.history.item if record.HasField("history") else record.summary.update
        for item in items:
            out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def test_an_analysed_fit_reaches_wandb(offline_wandb):
    tmp_path = offline_wandb
    logger = SafeWandbLogger(project="alternet-test", save_dir=str(tmp_path), group="exp", offline=True)
    dm = SyntheticDataModule(num_train=32, num_val=32, batch_size=16)
    module = ImageClassifier(Network("alternet_cifar_micro"), recipe=PLAIN)
    one = AnalysisData(num_batches=1, batch_size=16)
    callbacks = [
        VarianceCallback(data=one),
        LesionCallback(data=one),
        FreqNoiseCallback(freqs=[0.2, 0.8], eps=1.0, data=one),
    ]
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    logger.experiment.finish()
    run = _offline_run(tmp_path)
    summary = _summary(run)
    assert summary["variance/var_conv"] > 0 and 0 <= summary["lesion/clean_acc"] <= 1
    for key in ("variance/figure", "lesion/figure"):
        assert summary[f"{key}/_type"] == "images/separated"
        assert (run / "files" / summary[f"{key}/filenames"][0]).stat().st_size > 1000
    for key in ("variance/table/layers", "lesion/table/layers", "freq_noise/table/values"):
        assert summary[f"{key}/_type"] == "table-file"
        table = json.loads((run / "files" / summary[f"{key}/path"]).read_text())
        assert table["data"], key
    layers = json.loads((run / "files" / summary["variance/table/layers/path"]).read_text())
    assert layers["columns"][:3] == ["layer", "kind", "depth"]
    assert {row[1] for row in layers["data"]} >= {"conv", "msa"}
    noise = json.loads((run / "files" / summary["freq_noise/table/values/path"]).read_text())
    assert noise["columns"] == ["freqs", "acc", "delta"] and [r[0] for r in noise["data"]] == [0.2, 0.8]
    tags = [tuple(r.run.tags) for r in _records(run) if r.HasField("run") and r.run.tags]
    assert tags and {"alter", "alternet_cifar_micro"} <= set(tags[-1])
    groups = {r.run.run_group for r in _records(run) if r.HasField("run")}
    assert groups == {"exp"}


def test_report_comparison_run(offline_wandb):
    from alternet_pl import report
    from tests.test_report import make_run

    tmp_path = offline_wandb
    few = ("landscape", "fourier", "lesion", "freq_noise")  # two figures are enough here
    runs = [make_run(tmp_path, m, f"{m}_cifar_micro", skip=few) for m in ("resnet", "vit")]
    rep = report.build_report(runs, tmp_path / "out")
    where = wandb_tables.log_report(rep, tmp_path / "out", project="alternet-test", name="cmp")
    run = _offline_run(tmp_path / "out")
    assert where and Path(where).resolve() == run.resolve()
    summary = _summary(run)
    results = json.loads((run / "files" / summary["report/results/path"]).read_text())
    assert results["columns"][:3] == ["run", "model", "val/acc1 final"]
    assert [row[0] for row in results["data"]] == ["resnet/version_0", "vit/version_0"]
    for fig in rep.figures:
        assert (run / "files" / summary[f"report/{fig.name}/path"]).stat().st_size > 1000
    assert summary["resnet/version_0/val/acc1 best"] == pytest.approx(0.7)
    records = [r.run for r in _records(run) if r.HasField("run")]
    assert records[0].run_group == "comparison" and records[0].job_type == "report"
    assert set(records[0].tags) == {"resnet", "resnet_cifar_micro", "vit", "vit_cifar_micro"}


class _BrokenWandb:
    """A logger whose table logging fails like an unreachable W&B."""

    experiment = object()

    def __init__(self):
        self.metrics = []

    def log_metrics(self, metrics, step=None):
        self.metrics.append(metrics)

    def log_table(self, *args, **kwargs):
        raise ConnectionError("wandb.ai unreachable")


def test_a_wandb_table_failure_stops_no_training(tmp_path):
    broken = _BrokenWandb()
    dm = SyntheticDataModule(num_train=32, num_val=16, batch_size=16)
    module = ImageClassifier(Network("resnet_cifar_micro"), recipe=PLAIN)
    callback = VarianceCallback(data=AnalysisData(num_batches=1, batch_size=16), log_images=False)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    result = callback.run(module, dm, tmp_path, epoch=1, loggers=[broken])  # strict: any raise fails here
    assert trainer.state.finished and result.scalars()
    assert broken.metrics and "variance/var_conv" in broken.metrics[0]
    assert (tmp_path / "analysis" / "variance" / "epoch=001.json").is_file() and not callback.failures


def test_array_tables():
    assert wandb_tables.array_table("x", [1.0, 2.0]) == (["index", "x"], [[0, 1.0], [1, 2.0]])
    columns, rows = wandb_tables.array_table("loss", [[1, 2, 3], [4, 5, 6]])
    assert columns == ["row", "loss[:, 0]", "loss[:, 1]", "loss[:, 2]"] and rows[1] == [1, 4.0, 5.0, 6.0]
    assert wandb_tables.array_table("big", [0.0] * (wandb_tables.MAX_TABLE_CELLS + 1)) is None
    assert wandb_tables.architecture_tags("vit_cifar_micro") == ["vit", "vit_cifar_micro"]
