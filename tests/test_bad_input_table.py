"""The bad-input table: inputs users get wrong, across `fit`, `analyze` and `report`.

Each row runs the command in-process through `run_command` (as `python -m ...` does) in a sandbox
holding a hand-made run (config.yaml + checkpoint), another experiment's run and a run of another
architecture, and checks: exit status 2, one line on stderr that names the problem (the row's
expected words), no traceback, and not one file or folder of the sandbox created, changed or removed.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import torch

from alternet_pl.errors import DEBUG_ENV, run_command

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "experiments/quickstart.yaml")
TINY = [
    "--data.init_args.num_train=32",
    "--data.init_args.num_val=16",
    "--data.init_args.batch_size=16",
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
RUN_CONFIG = (
    "experiment: {experiment}\n"
    "model: {{model: {model}, num_classes: 10}}\n"
    "data:\n  class_path: alternet_pl.data.SyntheticDataModule\n"
    "  init_args: {{num_train: 16, num_val: 16, batch_size: 8}}\n"
)


def _fit_like_checkpoint(model: str) -> dict:
    from alternet_pl.training.module import ImageClassifier, Network

    module = ImageClassifier(Network(model), num_classes=10)
    return {
        "state_dict": module.state_dict(),
        "hyper_parameters": {"network": {"name": model, "kwargs": {}}, "num_classes": 10},
        "epoch": 0,
        "global_step": 2,
        "pytorch-lightning_version": "2.6.6",
        "loops": {},
    }


def _make_run(folder: Path, experiment: str, model: str) -> None:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(RUN_CONFIG.format(experiment=experiment, model=model))
    (folder / "metrics.csv").write_text("epoch,step,val/acc1\n0,1,0.5\n")
    torch.save(_fit_like_checkpoint(model), folder / "checkpoints" / "last.ckpt")


class _Code:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The sandbox's contents, made once: runs of two experiments and two architectures, bad files."""
    root = tmp_path_factory.mktemp("template")
    _make_run(root / "runs" / "other" / "version_0", "other", "alternet_cifar_micro")
    _make_run(root / "runs" / "quickstart" / "version_0", "quickstart", "resnet_cifar_micro")
    _make_run(root / "run", "run", "alternet_cifar_micro")
    (root / "junk.ckpt").write_bytes(b"PK\x03\x04 not a zip at all")
    torch.save({"state_dict": _Code()}, root / "code.ckpt")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "broken.yaml").write_text("model: {model: [unclosed\n")
    (root / "nomodel.yaml").write_text("data: {class_path: alternet_pl.data.SyntheticDataModule}\n")
    (root / "old.yaml").write_text(
        RUN_CONFIG.format(experiment="x", model="alternet_cifar_micro").replace(
            "num_classes: 10}", "num_classes: 10, drop_path: 0.1}"
        )
    )
    (root / "afile").write_text("a file, not a folder")
    (root / "empty_run").mkdir()
    (root / "empty_run" / "metrics.csv").write_text("epoch,step\n")
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    found: dict[str, tuple[int, int] | None] = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns) if path.is_file() else None
    return found


def _analysis(cls: str, init_args: str) -> str:
    return f"analyses:\n  - class_path: alternet_pl.callbacks.{cls}\n    init_args: {init_args}\n"


def _fit(*flags: str, analyses: str | None = None):
    def args(sandbox: Path) -> list[str]:
        extra = []
        if analyses is not None:
            (sandbox / "analyses_in.yaml").write_text(analyses)
            extra = ["--config", str(sandbox / "analyses_in.yaml")]
        return ["--config", QUICKSTART, f"--runs_dir={sandbox / 'runs'}", *TINY, *extra, *flags]

    return ("fit", args)


def _analyze(*flags: str):
    run = ["--config", "{s}/run/config.yaml", "--ckpt_path", "{s}/run/checkpoints/last.ckpt"]
    return ("analyze", lambda sandbox: [f.format(s=sandbox) for f in [*run, "--device=cpu", *flags]])


def _analyze_bare(*flags: str):
    return ("analyze", lambda sandbox: [f.format(s=sandbox) for f in flags])


def _report(*flags: str):
    return ("report", lambda sandbox: [f.format(s=sandbox) for f in flags])


def _enospc(monkeypatch, sandbox):
    """A full disk: every write of results/config text fails with ENOSPC."""
    import alternet_pl.fit

    def full(run_dir, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "config.yaml"))

    monkeypatch.setattr(alternet_pl.fit, "write_config", full)


def _read_only_runs(monkeypatch, sandbox):
    """A read-only file system under runs/ (as root, chmod would not stop the writes)."""
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(sandbox / "runs")) and not self.exists():
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def _read_only_run(monkeypatch, sandbox):
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if str(p) == str(sandbox / "run") else real_access(p, mode)
    )


def _ctrl_c_at_data(monkeypatch, sandbox):
    from alternet_pl.data import SyntheticDataModule

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SyntheticDataModule, "prepare_data", interrupt)


def _ctrl_c_in_analysis(monkeypatch, sandbox):
    from alternet_pl.callbacks import FourierCallback

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(FourierCallback, "run", interrupt)


NO_GPU = "needs a machine without a GPU"

# (id, command, expected words in the line, setup(monkeypatch, sandbox) or None)
TABLE = [
    # ---- fit: configuration ----------------------------------------------------------------------
    (
        "fit-unknown-model",
        _fit("--model.network.name=alternet_cifar_nope"),
        "unknown model 'alternet_cifar_nope'",
        None,
    ),
    ("fit-bad-layout", _fit("--model.network.kwargs={layout: [C, CX, CM, CM]}"), "letter", None),
    ("fit-num-classes", _fit("--model.num_classes=7"), "set --model.num_classes=10", None),
    (
        "fit-batch-gt-data",
        _fit("--data.init_args.batch_size=64", "--data.init_args.drop_last=true"),
        "drop_last=false",
        None,
    ),
    ("fit-batch-zero", _fit("--data.init_args.batch_size=0"), "batch_size must be >= 1", None),
    ("fit-batch-float", _fit("--data.init_args.batch_size=1.5"), "batch_size='1.5' is not valid", None),
    ("fit-epochs-word", _fit("--trainer.max_epochs=three"), "trainer.max_epochs='three' is not valid", None),
    ("fit-unknown-flag", _fit("--model.modle=x"), "unrecognized arguments: --model.modle=x", None),
    ("fit-missing-config", _fit("--config", "/nonexistent/exp.yaml"), "exp.yaml", None),
    ("fit-config-not-mapping", _fit("--config", "{s}/list.yaml"), "Unexpected config", None),
    (
        "fit-unknown-data-class",
        _fit("--data.class_path=alternet_pl.data.NopeDataModule"),
        "NopeDataModule",
        None,
    ),
    ("fit-one-class", _fit("--data.init_args.num_classes=1"), "num_classes must be >= 2", None),
    ("fit-every-n-steps-zero", _fit("--checkpoint_every_n_steps=0"), "checkpoint_every_n_steps 0", None),
    (
        "fit-every-n-steps-negative",
        _fit("--checkpoint_every_n_steps=-3"),
        "checkpoint_every_n_steps -3",
        None,
    ),
    (
        "fit-gpu-config",
        _fit("--config", str(ROOT / "configs/trainer/ddp.yaml")),
        "--trainer.accelerator=cpu",
        NO_GPU,
    ),
    # ---- fit: analyses ---------------------------------------------------------------------------
    (
        "fit-fourier-layer",
        _fit(analyses=_analysis("FourierCallback", "{layers: [nope]}")),
        "layer(s) ['nope']",
        None,
    ),
    (
        "fit-lesion-layer",
        _fit(analyses=_analysis("LesionCallback", "{layers: [nope]}")),
        "LesionCallback:",
        None,
    ),
    (
        "fit-freq-noise",
        _fit(analyses=_analysis("FreqNoiseCallback", "{freqs: [1.5]}")),
        "outside (0, 1]",
        None,
    ),
    ("fit-landscape-span", _fit(analyses=_analysis("LandscapeCallback", "{span: -1.0}")), "span", None),
    # ---- fit: data --------------------------------------------------------------------------------
    (
        "fit-cifar-missing",
        _fit("--data=alternet_pl.data.CIFAR10DataModule", "--data.init_args.root={s}/nope"),
        "cifar-10-batches-py",
        None,
    ),
    (
        "fit-imagefolder-missing",
        _fit("--data=alternet_pl.data.ImageFolderDataModule", "--data.init_args.root={s}/nope"),
        "not found",
        None,
    ),
    # ---- fit: resuming ----------------------------------------------------------------------------
    ("fit-ckpt-missing", _fit("--ckpt_path={s}/nope.ckpt"), "nope.ckpt not found", None),
    ("fit-ckpt-corrupt", _fit("--ckpt_path={s}/junk.ckpt"), "is corrupt", None),
    ("fit-ckpt-code", _fit("--ckpt_path={s}/code.ckpt"), "holds Python code", None),
    ("fit-last-no-run", _fit("--experiment=fresh", "--ckpt_path=last"), "no run of experiment 'fresh'", None),
    (
        "fit-last-version-missing",
        _fit("--experiment=other", "--ckpt_path=last", "--version=version_7"),
        "version_7 has no checkpoint",
        None,
    ),
    (
        "fit-ckpt-other-experiment",
        _fit("--ckpt_path={s}/runs/other/version_0/checkpoints/last.ckpt"),
        "belongs to experiment 'other'",
        None,
    ),
    ("fit-last-other-architecture", _fit("--ckpt_path=last"), "network='resnet_cifar_micro'", None),
    # ---- fit: the machine -------------------------------------------------------------------------
    ("fit-runs-dir-under-file", _fit("--runs_dir={s}/afile/runs"), "--runs_dir=<a writable folder>", None),
    ("fit-read-only-runs", _fit(), "read-only", _read_only_runs),
    ("fit-disk-full", _fit(), "the disk is full", _enospc),
    ("fit-ctrl-c", _fit(), "Ctrl-C", _ctrl_c_at_data),
    # ---- analyze ----------------------------------------------------------------------------------
    (
        "analyze-missing-config",
        _analyze_bare("--config", "{s}/nope.yaml", "--ckpt_path", "{s}/x.ckpt", "--analysis", "fourier"),
        "nope.yaml not found",
        None,
    ),
    (
        "analyze-config-without-model",
        _analyze_bare(
            "--config",
            "{s}/nomodel.yaml",
            "--ckpt_path",
            "{s}/run/checkpoints/last.ckpt",
            "--analysis",
            "fourier",
        ),
        "has no 'model' section",
        None,
    ),
    (
        "analyze-config-not-yaml",
        _analyze_bare(
            "--config",
            "{s}/broken.yaml",
            "--ckpt_path",
            "{s}/run/checkpoints/last.ckpt",
            "--analysis",
            "fourier",
        ),
        "not valid YAML",
        None,
    ),
    (
        "analyze-config-a-list",
        _analyze_bare(
            "--config",
            "{s}/list.yaml",
            "--ckpt_path",
            "{s}/run/checkpoints/last.ckpt",
            "--analysis",
            "fourier",
        ),
        "not a mapping",
        None,
    ),
    (
        "analyze-old-run-config",
        _analyze_bare(
            "--config",
            "{s}/old.yaml",
            "--ckpt_path",
            "{s}/run/checkpoints/last.ckpt",
            "--analysis",
            "fourier",
            "--device=cpu",
        ),
        "drop_path",
        None,
    ),
    (
        "analyze-analyses-from-missing",
        _analyze("--analysis", "fourier", "--analyses_from", "{s}/nope.yaml"),
        "--analyses_from",
        None,
    ),
    ("analyze-unknown-analysis", _analyze("--analysis", "nope"), "is not an analysis", None),
    ("analyze-no-analysis", _analyze(), "analysis", None),
    (
        "analyze-ckpt-missing",
        _analyze_bare(
            "--config",
            "{s}/run/config.yaml",
            "--ckpt_path",
            "{s}/nope.ckpt",
            "--analysis",
            "fourier",
            "--device=cpu",
        ),
        "not found",
        None,
    ),
    (
        "analyze-ckpt-corrupt",
        _analyze_bare(
            "--config",
            "{s}/run/config.yaml",
            "--ckpt_path",
            "{s}/junk.ckpt",
            "--analysis",
            "fourier",
            "--device=cpu",
        ),
        "is corrupt",
        None,
    ),
    (
        "analyze-ckpt-other-architecture",
        _analyze_bare(
            "--config",
            "{s}/run/config.yaml",
            "--ckpt_path",
            "{s}/runs/quickstart/version_0/checkpoints/last.ckpt",
            "--analysis",
            "fourier",
            "--device=cpu",
        ),
        "does not match the architecture",
        None,
    ),
    (
        "analyze-official-fit-checkpoint",
        _analyze_bare(
            "--official",
            "{s}/run/checkpoints/last.ckpt",
            "--data",
            "cifar10",
            "--analysis",
            "fourier",
            "--device=cpu",
        ),
        "is a checkpoint written by fit",
        None,
    ),
    (
        "analyze-official-missing",
        _analyze_bare(
            "--official", "{s}/nope.pth", "--data", "cifar10", "--analysis", "fourier", "--device=cpu"
        ),
        "not found",
        None,
    ),
    (
        "analyze-official-and-config",
        _analyze("--official", "{s}/x.pth", "--analysis", "fourier"),
        "replace --config and --ckpt_path",
        None,
    ),
    (
        "analyze-nothing-to-analyse",
        _analyze_bare("--analysis", "fourier", "--device=cpu"),
        "pass --config RUN/config.yaml",
        None,
    ),
    (
        "analyze-option-out-of-range",
        _analyze("--analysis", "fourier", "--fourier.data.num_batches=0"),
        "num_batches",
        None,
    ),
    ("analyze-device-cuda", _analyze("--analysis", "fourier", "--device=cuda"), "no GPU", NO_GPU),
    ("analyze-device-word", _analyze("--analysis", "fourier", "--device=tpu"), "pass cpu or cuda", None),
    ("analyze-read-only-run", _analyze("--analysis", "fourier"), "is not writable", _read_only_run),
    (
        "analyze-ctrl-c",
        _analyze("--analysis", "fourier", "--fourier.data.num_batches=1"),
        "Ctrl-C",
        _ctrl_c_in_analysis,
    ),
    # ---- report -----------------------------------------------------------------------------------
    ("report-no-runs", _report("--out", "{s}/fig"), "give run directories", None),
    ("report-run-missing", _report("{s}/nope", "--out", "{s}/fig"), "nope", None),
    ("report-run-without-results", _report("{s}/empty_run", "--out", "{s}/fig"), "no results in", None),
    (
        "report-official-csv-missing",
        _report("{s}/run", "--official-csv", "{s}/nope.csv", "--out", "{s}/fig"),
        "nope.csv does not exist",
        None,
    ),
    ("report-unknown-scale", _report("--scale", "huge", "--out", "{s}/fig"), "the report only draws", None),
    ("report-unknown-flag", _report("{s}/run", "--outt", "{s}/fig"), "unrecognized arguments", None),
]


@pytest.mark.parametrize("row", TABLE, ids=[row[0] for row in TABLE])
def test_bad_input_is_one_line_exit_2_and_changes_no_file(row, template, tmp_path, capsys, monkeypatch):
    name, (command, make_args), expected, setup = row
    if setup == NO_GPU:
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        setup = None
    sandbox = tmp_path / "sandbox"
    shutil.copytree(template, sandbox)
    monkeypatch.chdir(sandbox)  # relative defaults (runs/, figures/) land in the sandbox too
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    args = [a.replace("{s}", str(sandbox)) for a in make_args(sandbox)]
    before = _snapshot(sandbox)
    if setup is not None:
        setup(monkeypatch, sandbox)
    from alternet_pl import analyze, fit, report

    main = {"fit": fit.main, "analyze": analyze.main, "report": report.main}[command]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_command(main, args)
    monkeypatch.undo()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2, err
    last = err[-1] if err else ""
    assert "Traceback" not in "\n".join(err), err
    assert last.startswith(("error: ", "interrupted")) and expected in last, (expected, err)
    assert _snapshot(sandbox) == before  # no file created, changed or removed
