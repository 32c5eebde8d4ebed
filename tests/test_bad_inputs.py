"""Bad input: each gives one `InputError` line naming the problem and the fix, before any training.

(Checkpoint files: tests/test_checkpoints.py. Whole commands: tests/test_cli.py.)
"""

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alternet_pl.data import (
    CIFAR10DataModule,
    CorruptionDataModule,
    ImageFolderDataModule,
    SyntheticDataModule,
)
from alternet_pl.data.cifar import load_cifar
from alternet_pl.errors import InputError, MissingInputError


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def _write_cifar10(root: Path, skip: str | None = None, payload=None) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        if name == skip:
            continue
        entry = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        if payload is not None:
            entry[b"extra"] = payload
        (folder / name).write_bytes(pickle.dumps(entry))


def _write_folder(root: Path, classes=("ant", "bee"), splits=("train", "val"), per_class=2) -> None:
    rng = np.random.default_rng(1)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png"
                )


def test_missing_cifar_folder(tmp_path):
    with pytest.raises(MissingInputError) as err:
        CIFAR10DataModule(root=str(tmp_path)).prepare_data()
    assert "cifar-10-batches-py" in _one_line(err) and "download" in str(err.value)


def test_incomplete_cifar_folder(tmp_path):
    _write_cifar10(tmp_path, skip="data_batch_4")
    with pytest.raises(MissingInputError) as err:
        load_cifar(tmp_path, "cifar10", train=True)
    assert "data_batch_4 is missing" in _one_line(err)


class _Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_cifar_file_holding_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "marker"
    _write_cifar10(tmp_path, payload=_Marker(str(marker)))
    with pytest.raises(InputError) as err:
        load_cifar(tmp_path, "cifar10", train=False)
    assert "test_batch" in _one_line(err) and "pathlib" in str(err.value)
    assert not marker.exists()


def test_missing_imagefolder(tmp_path):
    with pytest.raises(MissingInputError) as err:
        ImageFolderDataModule(root=str(tmp_path / "imagenet")).prepare_data()
    assert "train/<class>/<image>" in _one_line(err)


def test_incomplete_imagefolder_val_lacks_a_class(tmp_path):
    _write_folder(tmp_path, classes=("ant", "bee", "cat"), splits=("train",))
    _write_folder(tmp_path, classes=("ant", "bee"), splits=("val",))
    dm = ImageFolderDataModule(
        root=str(tmp_path), image_size=8, batch_size=2, num_workers=0, auto_augment=None
    )
    with pytest.raises(InputError) as err:
        dm.setup()
    assert "differ" in _one_line(err) and "cat" in str(err.value)


def test_image_that_does_not_decode_is_named(tmp_path):
    _write_folder(tmp_path)
    bad = tmp_path / "val" / "bee" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    dm = ImageFolderDataModule(
        root=str(tmp_path), image_size=8, batch_size=8, num_workers=0, auto_augment=None, drop_last=False
    )
    with pytest.raises(InputError) as err:
        next(iter(dm.val_dataloader()))
    assert str(bad) in _one_line(err) and "delete" in str(err.value)


def test_missing_and_incomplete_cifar_c(tmp_path):
    with pytest.raises(MissingInputError) as err:
        CorruptionDataModule(tmp_path / "CIFAR-10-C", (0.5,) * 3, (0.25,) * 3).setup()
    assert "does not exist" in _one_line(err)
    root = tmp_path / "c"
    root.mkdir()
    np.save(root / "fog.npy", np.zeros((5, 4, 4, 3), np.uint8))
    np.save(root / "labels.npy", np.zeros(5, np.int64))
    with pytest.raises(MissingInputError) as err:
        CorruptionDataModule(root, (0.5,) * 3, (0.25,) * 3, corruptions=["fog", "snow"]).setup()
    assert "snow.npy" in _one_line(err) and "corruptions=" in str(err.value)


def test_batch_larger_than_the_data_with_drop_last(tmp_path):
    dm = SyntheticDataModule(num_train=20, num_val=8, batch_size=32, drop_last=True)
    with pytest.raises(InputError) as err:
        dm.setup()
    assert "batch_size=32" in _one_line(err) and "drop_last=false" in str(err.value)
    SyntheticDataModule(num_train=20, num_val=8, batch_size=32, drop_last=False).setup()  # fine


def test_empty_split():
    with pytest.raises(InputError) as err:
        SyntheticDataModule(num_train=20, num_val=0, batch_size=4).analysis_batches("val")
    assert "val split is empty" in _one_line(err)


def test_run_command_prints_one_line_and_hides_the_traceback(capsys, monkeypatch):
    from alternet_pl.errors import DEBUG_ENV, TrainingStopped, run_command

    def bad(argv):
        raise InputError(f"thing {argv} is wrong; pass a right one")

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_command(bad, ["x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: thing ['x'] is wrong") and "Traceback" not in err

    def stopped(argv):
        raise TrainingStopped("loss is nan")

    with pytest.raises(SystemExit) as exit_info:
        run_command(stopped)
    assert exit_info.value.code == 3 and capsys.readouterr().err.startswith("stopped: loss is nan")
    monkeypatch.setenv(DEBUG_ENV, "1")  # the traceback stays available
    with pytest.raises(InputError):
        run_command(bad, [])
    assert run_command(lambda argv: 7) == 7  # no error: the value passes through


# ---- whole commands: `python -m alternet_pl.fit ...` ends with one line, exit status 2 ------------
ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--data.init_args.num_train=32",
    "--data.init_args.num_val=16",
    "--data.init_args.batch_size=16",
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def _analysis(cls: str, init_args: str) -> str:
    return f"analyses:\n  - class_path: alternet_pl.callbacks.{cls}\n    init_args: {init_args}\n"


def _fit_fails(tmp_path, capsys, *flags: str, analyses: str | None = None) -> str:
    from alternet_pl import fit
    from alternet_pl.errors import run_command

    args = ["--config", str(ROOT / "experiments/quickstart.yaml"), f"--runs_dir={tmp_path / 'runs'}", *TINY]
    if analyses is not None:
        (tmp_path / "analyses.yaml").write_text(analyses)
        args += ["--config", str(tmp_path / "analyses.yaml")]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_command(fit.main, args + list(flags))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2, err
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # stopped before any training
    return err[-1]


@pytest.mark.parametrize(
    "flags, analyses, expected",
    [
        (["--model.network.name=alternet_cifar_nope"], None, "unknown model 'alternet_cifar_nope'"),
        (["--model.network.kwargs={layout: [C, CX, CM, CM]}"], None, "letter"),
        (["--model.num_classes=7"], None, "set --model.num_classes=10"),
        (["--data.init_args.batch_size=64", "--data.init_args.drop_last=true"], None, "drop_last=false"),
        (["--config", str(ROOT / "configs/trainer/ddp.yaml")], None, "--trainer.accelerator=cpu"),
        (
            [],
            _analysis("FourierCallback", "{layers: [nope]}"),
            "layer(s) ['nope']",
        ),
        (
            [],
            _analysis("FreqNoiseCallback", "{freqs: [1.5]}"),
            "outside (0, 1]",
        ),
        (
            [],
            _analysis("LandscapeCallback", "{span: -1.0}"),
            "span",
        ),
    ],
    ids=[
        "unknown-model",
        "bad-layout",
        "num-classes",
        "batch-gt-data",
        "gpu-config",
        "layer",
        "freq",
        "grid",
    ],
)
def test_fit_input_errors_end_with_one_line(tmp_path, capsys, flags, analyses, expected):
    if "ddp.yaml" in " ".join(flags):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    line = _fit_fails(tmp_path, capsys, *flags, analyses=analyses)
    assert expected in line, line


def test_unwritable_run_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    line = _fit_fails(tmp_path, capsys, f"--runs_dir={blocker / 'runs'}")
    assert "--runs_dir=<a writable folder>" in line and str(blocker) in line


def test_wrong_type_in_config_is_rejected_before_anything_runs(tmp_path, capsys):
    from alternet_pl import fit
    from alternet_pl.errors import run_command

    with pytest.raises(SystemExit) as exit_info:
        run_command(
            fit.main, ["--config", str(ROOT / "experiments/quickstart.yaml"), "--trainer.max_epochs=three"]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err  # one line, no usage block
    assert "trainer.max_epochs='three' is not valid: expected int" in err


def test_unknown_flag_and_nested_wrong_type_are_one_line(tmp_path, capsys):
    from alternet_pl import fit
    from alternet_pl.errors import run_command

    base = ["--config", str(ROOT / "experiments/quickstart.yaml")]
    for flag, expected in (
        ("--model.modle=x", "unrecognized arguments: --model.modle=x"),
        ("--data.init_args.batch_size=1.5", "data.init_args.batch_size='1.5' is not valid: expected int"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run_command(fit.main, base + [flag])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and expected in err, err


def test_report_for_runs_without_results(tmp_path, capsys):
    from alternet_pl import report
    from alternet_pl.errors import run_command

    run = tmp_path / "runs" / "x" / "version_0"
    (run / "analysis" / "hessian").mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,step,val/acc1\n")  # a header, no rows
    (run / "analysis" / "hessian" / "epoch=001.error.json").write_text("{}")  # only a failure
    with pytest.raises(SystemExit) as exit_info:
        run_command(report.main, [str(run), "--out", str(tmp_path / "fig")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith(f"error: no results in {run}") and "\n" not in err


def test_analyze_records_a_failed_analysis_runs_the_rest_and_ends_with_one_line(tmp_path, capsys):
    import torch

    from alternet_pl import analyze
    from alternet_pl.errors import run_command
    from alternet_pl.runs import read_error_records
    from alternet_pl.training.module import ImageClassifier, Network

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(
        "model: {model: alternet_cifar_micro, num_classes: 10}\n"
        "data:\n  class_path: alternet_pl.data.SyntheticDataModule\n"
        "  init_args: {num_train: 16, num_val: 16, batch_size: 8}\n"
    )
    module = ImageClassifier(Network("alternet_cifar_micro"), num_classes=10)
    torch.save({"state_dict": module.state_dict(), "epoch": 0}, run / "checkpoints" / "last.ckpt")
    args = ["--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    args += ["--analysis", "fourier", "variance", "--fourier.layers=[nope]", "--fourier.data.num_batches=1"]
    args += ["--variance.data.num_batches=1", "--device=cpu"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_command(analyze.main, args)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 3 and "\n" not in err
    assert err.startswith("failed: 1 of 2 analyses failed: fourier")
    (record,) = read_error_records(run)
    assert record.analysis == "fourier" and "nope" in record.error and "Traceback" in record.traceback
    assert list((run / "analysis" / "variance").glob("last-epoch=000.json"))  # the other one ran
