"""The GPU benchmark's machinery, on the CPU: a failing or overrunning section leaves the other sections'
rows and a failure row in --out (markdown, JSON, log); the dry run's work equals the plan its H100
projection is computed from, and that projection fits 6 minutes; the Lightning timer reads the clock
only at the ends; the prepared dependency folder imports (and PyHessian's product is right) on an
interpreter that sees only torch and what the GPU machine is said to have."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks import gpu, gpu_plan, prepare

ROOT = Path(__file__).resolve().parents[1]


def _files(out: Path) -> dict[str, Path]:
    return {p.suffix: p for p in out.iterdir() if p.suffix in (".md", ".json", ".log")}


def _run(out: Path, *args: str) -> tuple[dict, str, str]:
    gpu.main(["--dry-run", "--out", str(out), *args])
    files = _files(out)
    assert set(files) == {".md", ".json", ".log"} and len({p.stem for p in files.values()}) == 1
    return json.loads(files[".json"].read_text()), files[".md"].read_text(), files[".log"].read_text()


@pytest.mark.parametrize("how", ["raises", "timeout"])
def test_a_failing_section_leaves_the_others_rows_and_a_failure_row(tmp_path, how):
    inject = "landscape" if how == "raises" else "landscape:timeout"
    doc, md, log = _run(tmp_path, "--only", "hessian-error:vit,landscape", "--inject-failure", inject)
    status = {s["name"]: s["status"] for s in doc["sections"]}
    assert status == {"hessian-error:vit_cifar_micro": "ok", "landscape": "failed"}
    figures = [r["figure"] for r in doc["rows"]]
    assert sum(f.startswith("vit_cifar_micro: ") for f in figures) == 1 + len(gpu.DRY.tf32_settings)
    failure = [r for r in doc["rows"] if r["figure"] == "section landscape"]
    want = "RuntimeError: failure injected" if how == "raises" else "SectionStopped: over its 1 s time limit"
    assert len(failure) == 1 and failure[0]["missed"].startswith(want)
    assert (
        "| GPU failures | section landscape | failed |" in md
        and "| GPU Hessian error | vit_cifar_micro" in md
    )
    assert "Traceback" in log and want.split(": ")[1] in log
    assert doc["versions"]["torch"].startswith(torch.__version__) and doc["status"] == "complete"
    # the section that ran did exactly what the plan (and so the projection) counts for it
    assert doc["plan_check"]["matches"] and doc["plan_check"]["sections"] == ["hessian-error:vit_cifar_micro"]


def test_sigterm_stops_the_run_after_recording_where(tmp_path):
    only = "hessian-error:vit,landscape,training"
    doc, md, _ = _run(tmp_path, "--only", only, "--inject-failure", "landscape:sigterm")
    assert [(s["name"], s["status"]) for s in doc["sections"]] == [
        ("hessian-error:vit_cifar_micro", "ok"),
        ("landscape", "failed"),
    ]  # training never started
    assert doc["status"] == "stopped by SIGTERM" and "Status: stopped by SIGTERM" in md
    assert [r["missed"] for r in doc["rows"] if r["missed"]] == [
        "SectionStopped: stopped by SIGTERM (the command's time limit)"
    ]


@pytest.mark.slow
def test_a_killed_run_leaves_the_sections_written_before(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--dry-run", "--out", str(tmp_path), "--only",
           "hessian-error:vit,landscape", "--inject-failure", "landscape:kill"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9
    files = _files(tmp_path)
    doc = json.loads(files[".json"].read_text())
    assert doc["status"] == "running" and [s["name"] for s in doc["sections"]] == [
        "hessian-error:vit_cifar_micro"
    ]
    assert "| GPU Hessian error | vit_cifar_micro" in files[".md"].read_text()
    assert "[gpu:landscape]" in files[".log"].read_text()


def test_the_full_run_is_projected_within_six_minutes():
    gpu_plan.COUNT_MISSING[0] = False  # the committed counts only: a new model must be counted on purpose
    try:
        units = gpu_plan.plan(gpu.FULL, pyhessian=True, gpus=1)
        per = gpu_plan.project(units, gpu.FULL)
    finally:
        gpu_plan.COUNT_MISSING[0] = True
    assert "ddp" in per and per["ddp"] == 0  # one GPU: skipped
    # the data set, 2 sides x 3 repetitions x (a start + 220 steps), 50 batches of the loader alone
    assert sum(units["training"].values()) == 1 + 2 * 3 * (1 + 220) + 50
    assert 60 < sum(per.values()) <= 360, per


def test_flop_count_of_a_gradient_is_the_closed_form():
    layer = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    flops, ops = gpu_plan._count(lambda: torch.autograd.grad(layer(x).sum(), list(layer.parameters())))
    assert (
        flops == 2 * (2 * 5 * 4 * 3) and ops > 0
    )  # forward and weight gradient, 2*B*in*out each (x needs none)


def test_lightning_timer_reads_the_clock_only_at_the_two_ends(monkeypatch):
    from benchmarks import training_suite

    reads = []
    monkeypatch.setattr(training_suite._StepTimer, "now", lambda self: reads.append(1) or float(len(reads)))
    timer = training_suite._StepTimer(warmup=2, last=5, clock="cuda")
    for i in range(6):
        timer.on_train_batch_start(None, None, None, i)
        timer.on_train_batch_end(None, None, None, None, i)
    assert len(reads) == 2 and (timer.start, timer.end) == (1.0, 2.0)


def test_prepare_refuses_a_folder_of_something_else(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit) as exit_info:
        prepare.main([str(tmp_path)])
    assert exit_info.value.code == 2 and "MANIFEST.txt" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_prepare_pins_the_timm_we_test():
    assert f"timm=={importlib.metadata.version('timm')}" in prepare.requirements()


@pytest.mark.slow
def test_dry_run_writes_the_same_files_and_every_section_runs(tmp_path):
    doc, md, _ = _run(tmp_path)
    assert doc["status"] == "complete" and all(s["status"] == "ok" for s in doc["sections"])
    assert [s["name"] for s in doc["sections"]] == [n for n, _ in gpu.sections(gpu.DRY, "cpu", "wall")]
    assert doc["plan_check"]["matches"], doc["plan_check"]["mismatches"]
    for section in (
        "GPU Hessian error",
        "GPU Hessian time",
        "GPU Hessian memory",
        "GPU landscape",
        "GPU training",
        "GPU DDP",
    ):
        assert f"| {section} |" in md
    projected = float(re.search(r"Projected full run on one H100: (\d+) s", md).group(1))
    assert projected <= 360 and "failed" not in md


# ---- the prepared folder on an interpreter without the venv's packages ----------------------------------
DEVICE_HAS = ["torch", "numpy", "torchvision", "lightning", "pyyaml", "huggingface_hub", "safetensors"]
DEVICE_LACKS = ["timm", "jsonargparse", "pyhessian", "hessian-eigenthings", "scipy", "matplotlib", "wandb"]


def _closure(roots: list[str]) -> dict:
    from packaging.requirements import Requirement

    seen: dict = {}
    todo = list(roots)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _site_of(roots: list[str], lacks: list[str], target: Path) -> list[str]:
    """A folder of links to the files of `roots` and their dependencies (not `lacks`): a site-packages
    with only those installed. Returns the distributions linked."""
    target.mkdir()
    dists = {k: d for k, d in _closure(roots).items() if k not in lacks}
    for dist in dists.values():
        for top in {str(f).split("/")[0] for f in dist.files or [] if not str(f).startswith("..")}:
            src, dst = Path(dist.locate_file("")) / top, target / top
            if src.exists() and not dst.exists():
                dst.symlink_to(src)
    return sorted(dists)


CHECK = """
import json, sys
site, deps, root, out = sys.argv[1:5]
sys.path[:0] = [site, deps]
import hessian_eigenthings, jsonargparse, pyhessian, timm
found = {m.__name__: m.__file__ for m in (hessian_eigenthings, jsonargparse, pyhessian, timm)}
missing = []
for name in ("scipy", "matplotlib", "wandb"):
    try:
        __import__(name)
    except ImportError:
        missing.append(name)
sys.path.insert(0, root)
from benchmarks import gpu
gpu.main(["--dry-run", "--out", out, "--only", "hessian-error:resnet"])
print(json.dumps({"found": found, "timm": timm.__version__, "missing": missing}))
"""


@pytest.mark.slow
def test_prepared_folder_imports_on_an_interpreter_with_only_the_gpu_machines_packages(tmp_path):
    """Network: downloads ~3 MB (skipped with the reason when pip cannot reach the index).

    `python -I -S` reads no site-packages and no PYTHON* variables; its path is the standard library, a
    folder linking only torch, numpy, torchvision, Lightning and timm's own dependencies (what the GPU
    machine has), and the prepared folder. There the four packages must come from the folder, and a
    dry-run section with PyHessian must run and agree with our products."""
    deps = tmp_path / "deps"
    try:
        prepare.prepare(deps)
    except prepare.PrepareError as err:
        if "network" in str(err):
            pytest.skip(f"no package index reachable: {err}")
        raise
    linked = _site_of(DEVICE_HAS, DEVICE_LACKS, tmp_path / "site")
    assert "torch" in linked and not set(linked) & set(DEVICE_LACKS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            CHECK,
            str(tmp_path / "site"),
            str(deps),
            str(ROOT),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(Path(f).is_relative_to(deps) for f in result["found"].values()), result["found"]
    assert result["timm"] == importlib.metadata.version("timm")
    assert result["missing"] == ["scipy", "matplotlib", "wandb"]
    doc = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert doc["plan_check"]["matches"] and all(s["status"] == "ok" for s in doc["sections"])
    errors = [r["ours"] for r in doc["rows"] if "relative error of Hv" in r["figure"]]
    assert len(errors) == len(gpu.DRY.tf32_settings)
    for text in errors:  # on the CPU every path agrees with the cold double backward to fp32 rounding
        values = dict(re.findall(r"(\S+) (\d\.\de[+-]\d\d)", text))
        assert set(values) == {"cold", "cached", "forward-over-reverse", "PyHessian"}
        assert max(float(v) for v in values.values()) < 1e-5, text
