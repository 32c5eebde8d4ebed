"""Typed result records: every record survives its own files, and a missing field fails loudly
(in the record reader and in the report that reads it)."""

from __future__ import annotations

import json
import math
from dataclasses import fields

import numpy as np
import pytest

from alternet_pl.analysis.records import (
    RECORDS,
    AnalysisRecord,
    CorruptionRecord,
    FourierRecord,
    FreqNoiseRecord,
    HessianRecord,
    LandscapeRecord,
    LesionRecord,
    RecordError,
    ScalarRecord,
    TrajectoryRecord,
    VarianceRecord,
    load_record,
)

RNG = np.random.default_rng(0)
LAYERS = dict(
    layers=["stem", "stages.0.0", "stages.0.1"], kinds=["stem", "conv", "msa"], depth=[0.0, 0.5, 1.0]
)
META = dict(epoch=7, seconds=1.5, world_size=2, settings={"data": {"split": "val", "num_batches": 2}})


def examples() -> list[AnalysisRecord]:
    """One record of every kind, with NaN, None, nested and array fields where the kind has them."""
    grid = RNG.normal(size=(3, 3))
    return [
        ScalarRecord(values={"a": 1.0, "b": -2.5}, **META),
        HessianRecord(
            eigenvalues=np.array([1.0, 2.0]),
            residuals=np.array([1e-5, 2e-5, 3e-5]),
            top_eig=2.0,
            min_eig=math.nan,
            converged=True,
            num_params=120,
            num_samples=64,
            num_hvps=31,
            trace=3.5,
            trace_stderr=0.25,
            density_nodes=RNG.normal(size=(1, 8)),
            density_weights=RNG.random(size=(1, 8)),
            spectrum=RNG.normal(size=(4, 5)),
            spectrum_residuals=RNG.random(size=(4, 5)),
            spectrum_which="LM",
            spectrum_unconverged_batches=[2],
            block_names=["b0", "b1"],
            block_kinds=["conv", "msa"],
            block_top_eig=np.array([1.0, 0.5]),
            block_min_eig=np.array([-0.1, math.nan]),
            **META,
        ),
        HessianRecord(  # every optional part left out
            eigenvalues=np.array([1.0]),
            residuals=np.array([1e-5]),
            top_eig=1.0,
            min_eig=-0.5,
            converged=False,
            num_params=10,
            num_samples=4,
            num_hvps=3,
        ),
        LandscapeRecord(
            coords=np.linspace(-1, 1, 3),
            loss=grid + 3,
            nll=grid + 2,
            acc=RNG.random(size=(3, 3)),
            l2=np.ones((3, 3)),
            center_loss=3.0,
            center_acc=0.5,
            edge_increase=math.nan,
            max_increase=1.0,
            num_samples=32,
            nonfinite_cells=[[1.0, -1.0]],
            notes=["one cell was not finite"],
            **META,
        ),
        TrajectoryRecord(
            x=np.linspace(-1, 1, 3),
            y=np.linspace(-2, 2, 3),
            loss=grid,
            acc=grid,
            path=RNG.normal(size=(4, 2)),
            epochs=np.arange(4),
            explained=np.array([0.8, 0.15]),
            angle=RNG.normal(size=4),
            radius=RNG.random(size=4),
            path_length=2.5,
            **META,
        ),
        FourierRecord(
            **LAYERS,
            by_kind={"hf_conv": 0.5, "hf_change_msa": math.nan},
            hf=[0.1, 0.2, -0.3],
            curves=[[0.0, 0.1], [0.0, 0.2, 0.4], [0.0, -0.3]],
            **META,
        ),
        VarianceRecord(**LAYERS, by_kind={"var_msa": 0.1}, variance=[1.0, 2.0, 0.5], **META),
        LesionRecord(
            **LAYERS,
            by_kind={"drop_msa": 0.1},
            clean_acc=0.9,
            acc=[0.9, 0.8, 0.7],
            drop=[0.0, 0.1, 0.2],
            **META,
        ),
        FreqNoiseRecord(
            freqs=[0.1, 0.9], eps=0.1, width=0.2, clean_acc=0.8, acc=[0.7, 0.6], delta=[-0.1, -0.2], **META
        ),
        CorruptionRecord(
            root="data/CIFAR-10-C",
            corruptions=["fog"],
            severities=[1, 3],
            clean={"acc": 0.9, "nll": 0.3, "ece": 0.05},
            metrics={
                "fog": {"1": {"acc": 0.8, "nll": 0.5, "ece": 0.1}, "3": {"acc": 0.6, "nll": 1.0, "ece": 0.2}}
            },
            errors={"fog": [0.2, 0.4]},
            acc=np.array([[0.8, 0.6]]),
            mean_corruption_error=0.3,
            mean_acc=0.7,
            mean_nll=0.75,
            mean_ece=0.15,
            baseline="base.json",
            mce=1.2,
            ce={"fog": 1.2},
            **META,
        ),
    ]


def assert_same_record(a: AnalysisRecord, b: AnalysisRecord) -> None:
    assert type(a) is type(b)
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)
            assert x.dtype == y.dtype, f.name
        else:
            assert json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True), f.name  # NaN == NaN


def test_every_record_kind_has_an_example():
    assert {type(r).__name__ for r in examples()} == set(RECORDS) - {"_LayerRecord"}


@pytest.mark.parametrize("record", examples(), ids=lambda r: type(r).__name__)
def test_round_trip(record, tmp_path):
    paths = record.to_files(tmp_path, "epoch=007")
    assert paths["json"] == tmp_path / "epoch=007.json"
    assert ("npz" in paths) == any(getattr(record, n) is not None for n in record.array_fields())
    for path in (paths["json"], tmp_path / "epoch=007"):
        assert_same_record(type(record).from_files(path), record)
        assert_same_record(load_record(path), record)
    doc = json.loads(paths["json"].read_text())
    assert doc["record"] == type(record).__name__
    assert set(doc["scalars"]) == set(record.scalars())


def test_records_are_frozen():
    record = examples()[0]
    with pytest.raises(AttributeError):
        record.epoch = 3  # type: ignore[misc]
    assert record.replace(epoch=3).epoch == 3 and record.epoch == 7


@pytest.mark.parametrize("name", ["top_eig", "spectrum_which", "density_nodes"])
def test_a_missing_field_fails_loudly(name, tmp_path):
    record = examples()[1]
    record.to_files(tmp_path, "epoch=001")
    if name in record.array_fields():
        with np.load(tmp_path / "epoch=001.npz") as data:
            kept = {k: data[k] for k in data.files if k != name}
        np.savez(tmp_path / "epoch=001.npz", **kept)
    else:
        doc = json.loads((tmp_path / "epoch=001.json").read_text())
        del doc[name]
        (tmp_path / "epoch=001.json").write_text(json.dumps(doc))
    with pytest.raises(RecordError, match=f"field '{name}' of HessianRecord is missing"):
        HessianRecord.from_files(tmp_path / "epoch=001.json")


def test_the_wrong_kind_is_refused(tmp_path):
    examples()[0].to_files(tmp_path, "x")
    with pytest.raises(RecordError, match="holds a 'ScalarRecord', not a HessianRecord"):
        HessianRecord.from_files(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"record": "Nope"}')
    with pytest.raises(RecordError, match="'Nope' unknown"):
        load_record(tmp_path / "y.json")


def test_report_fails_loudly_on_a_record_with_a_missing_field(tmp_path):
    from alternet_pl import report

    run = tmp_path / "runs" / "exp" / "version_0"
    (run).mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,val/acc1\n0,0.5\n")
    out = run / "analysis" / "fourier"
    next(r for r in examples() if isinstance(r, FourierRecord)).to_files(out, "epoch=001")
    report.main([str(run), "--out", str(tmp_path / "ok")])
    assert (tmp_path / "ok" / "fig2a_fourier_by_depth.png").is_file()
    doc = json.loads((out / "epoch=001.json").read_text())
    doc["high_freq"] = doc.pop("hf")  # a writer that renamed a field
    (out / "epoch=001.json").write_text(json.dumps(doc))
    with pytest.raises(RecordError, match="'hf' of FourierRecord is missing"):
        report.main([str(run), "--out", str(tmp_path / "bad")])
