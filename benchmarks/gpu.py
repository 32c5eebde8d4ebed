"""The GPU benchmark (run by `benchmarks/gpu.sh`): the code paths a CPU never exercises, at full size.

    python -m benchmarks.gpu [--dry-run] [--out DIR] [--only PREFIX,...] [--budget SECONDS]

Sections, each model in its own guard (a failure or a time-out becomes a row saying what failed; the
next section still runs):
  hessian-error:<model>   every product path (cold and cached double backward, forward-over-reverse,
                          PyHessian) against the cold double backward in fp32 with TF32 off, under each
                          TF32 setting; that reference against float64
  hessian-time:<model>    product time over a gradient's, the fused-attention gradient, ours vs PyHessian
  hessian-memory:<model>  peak memory over a gradient's, and the graph each method holds between products
  landscape               grid time over its forward floor
  training                Lightning bf16-mixed step over a plain bf16 loop's
  ddp                     a 2-device fit in a subprocess (skipped with one GPU)
for `resnet_cifar_50` and `vit_cifar_ti` at batch 128 and `alternet_cifar_50`. After every section the
table is rewritten to DIR as <date>-<machine>-gpu.md and .json, with the run's log beside them (.log);
versions come first. `--dry-run` runs every path at micro sizes on the CPU (the figures mean nothing)
and prints the H100 projection of the full run from its counts (`benchmarks.gpu_plan`).
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import gc
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import gpu_plan
from benchmarks.table import RESULTS_DIR, Row, machine_description, machine_slug, render

__all__ = ["Scale", "FULL", "DRY", "Report", "main"]

TITLE = "alternet-pl GPU benchmark"


@dataclass(frozen=True)
class Scale:
    """Sizes of one run: the full GPU run or the CPU dry run."""

    train_model: str
    num_classes: int
    train_batch: int
    train_steps: int  # per run, `warmup` of them untimed
    warmup: int
    train_repeats: int
    workers: int
    hessian_models: tuple[str, ...]
    hessian_batch: int
    repeats: int  # timed repetitions of each Hessian measurement (after one untimed)
    tf32_settings: tuple[str, ...]
    grid_model: str
    grid_steps: int
    grid_batch: int
    grid_repeats: int
    ddp_timeout: int


_MODELS = ("resnet_cifar_50", "vit_cifar_ti")
_MICRO = ("resnet_cifar_micro", "vit_cifar_micro")
_TF32 = ("off", "default", "on")
FULL = Scale(
    "alternet_cifar_50", 100, 128, 220, 20, 3, 12, _MODELS, 128, 5, _TF32, "alternet_cifar_50", 9, 128, 3, 150
)
DRY = Scale(
    "alternet_cifar_micro", 10, 8, 6, 2, 3, 0, _MICRO, 8, 3, _TF32, "alternet_cifar_micro", 3, 8, 3, 240
)


class SectionStopped(BaseException):
    """A section ran past its time limit, or the process was told to stop (SIGTERM)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Report:
    """The rows so far, the versions, the sections' outcomes; `write()` puts the markdown and JSON
    (atomically) and `log()` appends to the log, all under one stem in `out`."""

    def __init__(self, out: Path, stem: str, versions: dict[str, str], settings: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.md, self.json, self.log_path = (out / f"{stem}{ext}" for ext in (".md", ".json", ".log"))
        self.versions, self.settings = versions, settings
        self.rows: list[Row] = []
        self.sections: list[dict] = []
        self.status = "running"
        self.plan_check: dict = {}
        self._log = self.log_path.open("w", buffering=1)
        faulthandler.enable(self._log)  # a crash in C code still leaves its stack in the log

    def log(self, msg: str) -> None:
        log(msg)
        self._log.write(msg + "\n")

    def write(self) -> None:
        done = ", ".join(f"{x['name']} {x['status']} ({x['seconds']:.0f} s)" for x in self.sections)
        settings = f"{self.settings}\n\nStatus: {self.status}. Sections: {done or 'none yet'}."
        text = render(self.rows, TITLE, settings, self.versions)
        doc = {
            "title": TITLE,
            "status": self.status,
            "versions": self.versions,
            "settings": self.settings,
            "sections": self.sections,
            "plan_check": self.plan_check,
            "rows": [
                dict(dataclasses.asdict(r), median=r.median if r.ratios else None, status=r.status)
                for r in self.rows
            ],
        }
        for path, content in ((self.md, text), (self.json, json.dumps(doc, indent=1) + "\n")):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(content)
            os.replace(tmp, path)


def _version(dist: str, module: str) -> str:
    try:
        mod = __import__(module)
    except Exception as err:  # noqa: BLE001  (an absent or broken package is a fact to report)
        return f"not importable ({type(err).__name__})"
    try:
        ver = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        ver = getattr(mod, "__version__", "?")
    return f"{ver} from {Path(mod.__file__).parent.parent}"


def versions(device: str) -> dict[str, str]:
    """torch, CUDA, cuDNN, timm and the peers (with where they were imported from), driver, GPU."""
    desc = machine_description()
    desc["torch"] = (
        f"{torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
        f"{torch.get_num_threads()} intra-op thread(s)"
    )
    for dist, module in (
        ("timm", "timm"),
        ("lightning", "lightning"),
        ("PyHessian", "pyhessian"),
        ("hessian-eigenthings", "hessian_eigenthings"),
        ("jsonargparse", "jsonargparse"),
    ):
        desc[dist] = _version(dist, module)
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        desc["gpu"] = (
            f"{p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, "
            f"{torch.cuda.device_count()} visible"
        )
        try:
            smi = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            desc["driver"] = subprocess.run(smi, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as err:
            desc["driver"] = f"nvidia-smi failed ({type(err).__name__})"
    return desc


def sections(s: Scale, device: str, clock: str) -> list[tuple[str, Callable[[], list[Row]]]]:
    """(name, function) of every section in run order: cheap and most telling first."""
    from benchmarks import gpu_hessian as gh
    from benchmarks import gpu_training as gt

    shared: dict = {}
    out: list[tuple[str, Callable[[], list[Row]]]] = []
    for m in s.hessian_models:
        out.append((f"hessian-error:{m}", lambda m=m: gh.error_rows(m, s, device)))
    for m in s.hessian_models:
        out.append((f"hessian-time:{m}", lambda m=m: gh.time_rows(m, s, device, clock)))
        out.append((f"hessian-memory:{m}", lambda m=m: gh.memory_rows(m, s, device)))
    out.append(("landscape", lambda: gt.landscape_rows(s, device, clock)))
    out.append(("training", lambda: gt.training_rows(s, device, clock, shared)))
    out.append(("ddp", lambda: gt.ddp_rows(s, device, clock, shared)))
    return out


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _alarm(seconds: float) -> None:
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.0))


def guarded(
    report: Report, name: str, fn: Callable[[], list[Row]], limit: float, device: str, inject: str
) -> None:
    """Run one section under a time limit; its rows, or one row saying what failed, go to the report,
    which is then rewritten."""

    def over(signum, frame):  # noqa: ARG001
        raise SectionStopped(f"over its {limit:.0f} s time limit")

    if inject == f"{name}:timeout":
        limit = 1.0
    gpu_plan.begin(name)
    start = time.perf_counter()
    report.log(f"[gpu:{name}] limit {limit:.0f} s")
    old = signal.signal(signal.SIGALRM, over)
    _alarm(limit)
    try:
        if inject == f"{name}:timeout":
            time.sleep(limit + 5)  # interrupted by the alarm
        if inject in (f"{name}:sigterm", f"{name}:kill"):  # as `timeout` would, softly or not
            os.kill(os.getpid(), signal.SIGTERM if inject.endswith("sigterm") else signal.SIGKILL)
            time.sleep(5)
        if inject == name:
            raise RuntimeError(f"failure injected into {name} (--inject-failure)")
        rows = fn()
        status, report_rows = "ok", rows
    except (Exception, SectionStopped) as err:
        status = "failed"
        report.log("".join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip())
        what = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
        report_rows = [Row("GPU failures", f"section {name}", "failed", "-", missed=what)]
    finally:
        _alarm(0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.perf_counter() - start
    report.rows += report_rows
    report.sections.append({"name": name, "status": status, "seconds": round(seconds, 1)})
    for r in report_rows:
        report.log(f"  {r.figure}: {r.ours} | {r.baseline} | {r.cells()[4]} | {r.status}")
    _free(device)
    report.write()


def projection(device: str) -> tuple[str, dict[str, float]]:
    """The full run's projected H100 seconds (one GPU) per section, from `plan(FULL)`, as text."""
    from benchmarks.gpu_hessian import pyhessian_missing

    units = gpu_plan.plan(FULL, pyhessian=not pyhessian_missing(), gpus=max(1, torch.cuda.device_count()))
    per = gpu_plan.project(units, FULL)
    total = sum(per.values())
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in per.items())
    n = sum(sum(c.values()) for c in units.values())
    text = (
        f"Projected full run on one H100: {total:.0f} s ({total / 60:.1f} min; budget 6 min) for {n} units "
        f"of work counted by the plan the dry run checks: {parts}. Assumptions: "
        f"{gpu_plan.PROJECTION_ASSUMPTIONS}."
    )
    return text, per


def _plan_check(report: Report, s: Scale) -> dict:
    """Whether each section that ran through did exactly the work `plan(s)` counts for it."""
    from benchmarks.gpu_hessian import pyhessian_missing

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    want = gpu_plan.plan(s, pyhessian=not pyhessian_missing(), gpus=gpus)
    got = gpu_plan.tallied()
    ran = [x["name"] for x in report.sections if x["status"] == "ok"]
    bad = {
        n: {"tallied": str(dict(got.get(n, {}))), "planned": str(dict(want.get(n, {})))}
        for n in ran
        if got.get(n, {}) != want.get(n, {})
    }
    return {"sections": ran, "matches": not bad, "mismatches": bad}


def _run_sections(report: Report, args, s: Scale, device: str, clock: str, per: dict, start: float) -> None:
    only = [p for p in args.only.split(",") if p]
    chosen = [(n, f) for n, f in sections(s, device, clock) if not only or any(n.startswith(p) for p in only)]
    for name, fn in chosen:
        if report.status != "running":
            break
        left = args.budget - (time.perf_counter() - start)
        if left < 20:
            report.rows.append(
                Row(
                    "GPU failures",
                    f"section {name}",
                    "skipped",
                    "-",
                    missed=f"not started: {left:.0f} s of the {args.budget:.0f} s budget left",
                )
            )
            report.sections.append({"name": name, "status": "skipped", "seconds": 0.0})
            report.write()
            continue
        limit = left if args.dry_run else min(left, 60 + 3 * per.get(name, 60))
        guarded(report, name, fn, limit, device, args.inject_failure)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="micro sizes on any device: proves the code paths")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the .md, .json and .log")
    ap.add_argument("--only", default="", help="comma-separated section-name prefixes (default: all)")
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for all sections (default 510 on a GPU, 3600 in a dry run)",
    )
    ap.add_argument(
        "--inject-failure",
        default="",
        metavar="SECTION[:timeout|:sigterm|:kill]",
        help="test hook: SECTION raises, runs past its time limit, gets SIGTERM or SIGKILL",
    )
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.dry_run:
        ap.error(
            "no CUDA device: this benchmark needs a GPU; pass --dry-run to check the code paths on the CPU"
        )
    if args.budget is None:
        args.budget = 3600.0 if args.dry_run else 510.0
    return args


def main(argv: list[str] | None = None) -> Path:
    """Run the sections, rewriting the table after each; returns the markdown file's path."""
    args = _arguments(argv)
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    s, clock = (DRY if args.dry_run else FULL), ("cuda" if device == "cuda" else "wall")
    os.environ.setdefault("WANDB_MODE", "disabled")
    if device == "cpu":
        torch.set_num_threads(1)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # timings: TF32 on
    gpu_plan.COUNT_MISSING[0] = device == "cpu"  # on the GPU only the committed counts: no minutes spent
    try:
        proj_text, per = projection(device)
    except Exception as err:  # noqa: BLE001  (a budget estimate must not stop the run)
        proj_text, per = f"No projection ({type(err).__name__}: {err}).", {}
    log(proj_text)
    mode = f"DRY RUN at micro sizes on {device}: the figures mean nothing" if args.dry_run else "GPU run"
    settings = (
        f"{mode}. {s}. Timings in {clock} seconds with TF32 on, medians of interleaved repetitions; every "
        f"gradient and product under the math attention kernel unless a row says fused.\n\n{proj_text}"
    )
    import datetime as dt

    stem = f"{dt.date.today().isoformat()}-{machine_slug()}-gpu{'-dry-run' if args.dry_run else ''}"
    report = Report(args.out, stem, versions(device), settings)
    report.log(f"versions: {json.dumps(report.versions)}")
    report.write()
    gpu_plan.TALLY.clear()

    def term(signum, frame):  # noqa: ARG001
        report.status = "stopped by SIGTERM"
        raise SectionStopped("stopped by SIGTERM (the command's time limit)")

    old_term = signal.signal(signal.SIGTERM, term)
    try:
        _run_sections(report, args, s, device, clock, per, start)
    except SectionStopped:
        pass  # between sections: what is written stays; the status says why it ended early
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if report.status == "running":
        report.status = "complete"
    report.plan_check = _plan_check(report, s)
    report.log(f"plan check: {json.dumps(report.plan_check)}")
    report.log(f"took {time.perf_counter() - start:.0f} s; written to {report.md}")
    report.write()
    print(report.md.read_text())
    return report.md


if __name__ == "__main__":
    main()
