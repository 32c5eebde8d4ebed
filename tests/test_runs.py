"""`alternet_pl.runs`: every file kind of a run directory reads back what was written (config, result
stems, figures, error records, checkpoints), the order of stems is the latest-result order, and an
error record from a failing analysis reaches the report's text through the same reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alternet_pl import runs
from alternet_pl.analysis.records import VarianceRecord, load_record
from alternet_pl.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _raise(err: BaseException) -> BaseException:
    try:
        raise err
    except BaseException as caught:  # noqa: BLE001  (a raised exception carries its traceback)
        return caught


def test_config_round_trip(tmp_path):
    text = yaml.safe_dump({"experiment": "x", "model": {"model": "vit_cifar_micro", "model_kwargs": None}})
    path = runs.write_config(tmp_path, text)
    assert path == tmp_path / "config.yaml" and path.read_text() == text
    assert runs.read_config(tmp_path) == yaml.safe_load(text)
    assert runs.read_config(tmp_path / "none") == {}  # a run without config.yaml (e.g. analysis only)


@pytest.mark.parametrize("text", ["[1, 2]\n", "model: {model: [unclosed\n"])
def test_config_that_is_not_a_mapping_is_one_line(tmp_path, text):
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(InputError, match="config.yaml") as err:
        runs.read_config(tmp_path)
    assert "\n" not in str(err.value)


def test_result_stems_round_trip_in_latest_order(tmp_path):
    record = VarianceRecord(layers=["a"], kinds=["conv"], depth=[0.0], variance=[1.0])
    stems = [runs.result_stem(12), runs.result_stem(3), runs.result_stem(3, checkpoint="last"), "best"]
    assert stems[:3] == ["epoch=012", "epoch=003", "last-epoch=003"]
    folder = runs.analysis_dir(tmp_path, "variance")
    for stem in stems:
        record.replace(epoch=runs.stem_order(stem)[0]).to_files(folder, stem)
    runs.write_error_record(tmp_path, "variance", runs.result_stem(20), 20, _raise(ValueError("x")))
    (folder / ".epoch=030.json.tmp").write_text("{")  # a write in progress is no result
    # latest last: no epoch first, then by epoch, a plain epoch=N before <checkpoint>-epoch=N
    assert runs.result_stems(tmp_path, "variance") == ["best", "epoch=003", "last-epoch=003", "epoch=012"]
    assert load_record(folder / "epoch=012.json").epoch == 12
    assert runs.result_stems(tmp_path, "hessian") == []
    assert runs.figure_name("epoch=003") == "epoch=003.png"
    assert runs.figure_name("epoch=003", "spectrum") == "epoch=003_spectrum.png"


def test_error_record_round_trip(tmp_path):
    class Diverged(ValueError):
        error_kind = "nonfinite"

    for analysis, err in [
        ("hessian", _raise(RuntimeError("out of memory"))),
        ("lesion", _raise(Diverged("NaN"))),
    ]:
        path = runs.write_error_record(tmp_path, analysis, runs.result_stem(4), 4, err)
        assert path == tmp_path / "analysis" / analysis / "epoch=004.error.json"
    hessian, lesion = runs.read_error_records(tmp_path)
    assert (hessian.analysis, hessian.stem, hessian.epoch, hessian.kind) == (
        "hessian",
        "epoch=004",
        4,
        "error",
    )
    assert hessian.error == "RuntimeError: out of memory" and "Traceback" in hessian.traceback
    assert lesion.kind == "nonfinite" and lesion.error.endswith("Diverged: NaN") and lesion.path.is_file()
    assert json.loads(lesion.path.read_text())["error"] == lesion.error  # the file says it, not a guess


@pytest.mark.parametrize(
    "content",
    [
        '{"analysis": "hessian", "epoch": 1, "kind": "error", "message": "old key", "traceback": ""}',
        "{cut",
        "[]",
    ],
)
def test_error_record_that_cannot_be_read_is_named_not_guessed(tmp_path, content):
    path = runs.analysis_dir(tmp_path, "hessian") / f"epoch=001{runs.ERROR_SUFFIX}"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    (record,) = runs.read_error_records(tmp_path)
    assert record.kind == "unreadable" and record.analysis == "hessian" and record.stem == "epoch=001"
    assert record.error.startswith("unreadable error record") and "old key" not in record.error


def test_checkpoint_paths(tmp_path):
    run = tmp_path / "exp" / "version_0"
    last = runs.checkpoints_dir(run) / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    hpc = run / "hpc_ckpt_3.ckpt"
    hpc.write_bytes(b"")
    assert runs.run_dir_of_checkpoint(last) is None  # no config.yaml: not a run directory
    runs.write_config(run, "experiment: exp\n")
    assert runs.run_dir_of_checkpoint(last) == run and runs.run_dir_of_checkpoint(hpc) == run
    assert runs.run_dir_of_checkpoint(tmp_path / "loose.ckpt") is None
    assert runs.analysis_root_of_checkpoint(last) == run
    assert runs.analysis_root_of_checkpoint(tmp_path / "x" / "loose.ckpt") == tmp_path / "x"


def test_has_results(tmp_path):
    assert not runs.has_results(tmp_path)
    (tmp_path / runs.METRICS_FILE).write_text("epoch,step,val/acc1\n")  # a header only
    assert not runs.has_results(tmp_path)
    runs.write_error_record(tmp_path, "hessian", "epoch=001", 1, _raise(ValueError("x")))  # a failure only
    assert not runs.has_results(tmp_path)
    VarianceRecord(layers=["a"], kinds=["conv"], depth=[0.0], variance=[1.0]).to_files(
        runs.analysis_dir(tmp_path, "variance"), "epoch=001"
    )
    assert runs.has_results(tmp_path)
    (tmp_path / "analysis" / "variance" / "epoch=001.json").unlink()
    (tmp_path / runs.METRICS_FILE).write_text("epoch,step,val/acc1\n0,9,0.5\n")
    assert runs.has_results(tmp_path)


def test_failing_analysis_message_reaches_the_report(tmp_path):
    """An analysis that raises during training (here: no data module to draw batches from) writes its
    error record through the callback; the report names the analysis, the stem and the exception's own
    message, read through the same module."""
    from types import SimpleNamespace

    from torch import nn

    from alternet_pl import report
    from alternet_pl.callbacks import VarianceCallback
    from alternet_pl.plots.rundata import load_run

    run = tmp_path / "exp" / "version_0"
    runs.write_config(run, "experiment: exp\nmodel: {model: resnet_cifar_micro}\n")
    trainer = SimpleNamespace(
        sanity_checking=False,
        datamodule=None,
        default_root_dir=str(run),
        optimizers=[],
        loggers=[],
        global_step=7,
        is_global_zero=True,
        world_size=1,
    )
    VarianceCallback()._maybe_run(trainer, nn.Linear(2, 2), "epoch", 2)  # strict=False: logged, not raised
    (record,) = runs.read_error_records(run)
    assert (record.analysis, record.stem, record.epoch, record.kind) == ("variance", "epoch=002", 2, "error")
    assert record.error.startswith("RuntimeError: VarianceCallback needs a datamodule")
    (line,) = report.missing_analyses([load_run(run)])["exp/version_0"]
    assert line == f"variance: failed (epoch=002): {record.error} [{record.path}]"


def test_versions_are_numbered_not_sorted_as_text(tmp_path):
    assert runs.next_version(tmp_path) == "version_0" and runs.newest_version(tmp_path) is None
    for name in ("version_0", "version_2", "version_10", "version_x", "job_7"):
        (tmp_path / name).mkdir()
    assert runs.version_numbers(tmp_path) == [0, 2, 10]
    assert runs.newest_version(tmp_path) == "version_10" and runs.next_version(tmp_path) == "version_11"


def test_record_path_is_what_the_record_writes(tmp_path):
    written = VarianceRecord(layers=["a"], kinds=["conv"], depth=[0.0], variance=[1.0]).to_files(
        runs.analysis_dir(tmp_path, "variance"), runs.result_stem(5)
    )
    assert written["json"] == runs.record_path(tmp_path, "variance", "epoch=005")
