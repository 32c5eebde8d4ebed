"""`python -m alternet_pl.report RUN_DIR [RUN_DIR ...] --out DIR`: the paper's figures from result files.

Reads only what runs wrote (`config.yaml`, `metrics.csv`, `analysis/<name>/*`; see
`alternet_pl.plots.rundata`), so figures are redrawn without re-running anything. Writes into `--out`:
every comparison figure the runs have data for (PNG and PDF), `table_results.md`, `report.md` and a
static `index.html` (opens from disk; images by relative path) with the results table, each figure
with what the paper shows there and what these runs show, and the missing or failed analyses of each
run. `--scale smoke|paper` first trains the paper's model trio (and the build-up series) with the
analysis suite (`make reproduce-figures`); `--wandb` also logs the figures and the table to a W&B run
of their own.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from alternet_pl.analysis.results import write_figure, write_text  # noqa: E402
from alternet_pl.errors import InputError, run_command  # noqa: E402
from alternet_pl.plots import compare  # noqa: E402
from alternet_pl.plots.landscape import read_official_csv  # noqa: E402
from alternet_pl.plots.rundata import ANALYSIS_NAMES, Run, load_run  # noqa: E402
from alternet_pl.runs import global_rank_from_env  # noqa: E402

__all__ = [
    "FIGURE_FORMATS",
    "SCALES",
    "SMOKE_CORRUPTIONS",
    "Report",
    "build_report",
    "main",
    "missing_analyses",
    "results_table",
    "scale_arguments",
    "train_scale",
    "write_smoke_corruptions",
]

#: every figure is written in these formats
FIGURE_FORMATS = ("png", "pdf")

_SMOKE_ANALYSIS = "configs/analysis/smoke.yaml"
#: where `--scale smoke` writes its synthetic corrupted set (configs/analysis/smoke.yaml reads it)
SMOKE_CORRUPTIONS = Path("data/SYNTHETIC-C")


def _layout(stages: Sequence[str]) -> str:
    return "--model.model_kwargs={layout: [" + ", ".join(stages) + "]}"


#: every smoke run trains on 1000 synthetic images (3 epochs): half the quickstart's, so that the whole
#: smoke scale fits 15 minutes on 2 cores and accuracies stay below saturation
_SMOKE_DATA = "--data.init_args.num_train=1000"

#: what each scale trains: (label, config files, extra flags). At the smoke scale the trio states its
#: layout, so ResNet (0 MSAs) and AlterNet (2) are also points of the build-up curve, between the
#: micro build-up steps with 1 and 3 MSAs (trained without analyses).
SCALES: dict[str, list[tuple[str, list[str], list[str]]]] = {
    "smoke": [
        (
            name,
            ["experiments/quickstart.yaml", _SMOKE_ANALYSIS],
            [f"--model.model={model}", *extra, _SMOKE_DATA, f"--experiment=smoke_{name}"],
        )
        for name, model, extra in (
            ("resnet", "resnet_cifar_micro", [_layout(["C", "C", "CC", "CC"])]),
            ("vit", "vit_cifar_micro", []),
            ("alternet", "alternet_cifar_micro", [_layout(["C", "C", "CM", "CM"])]),
        )
    ]
    + [
        (
            f"buildup_{k}",
            ["experiments/quickstart.yaml"],
            [
                "--model.model=alternet_cifar_micro",
                _layout(stages),
                _SMOKE_DATA,
                f"--experiment=smoke_buildup_{k}msa",
            ],
        )
        for k, stages in ((1, ["C", "C", "CC", "CM"]), (3, ["C", "M", "CM", "CM"]))
    ],
    "paper": [
        (name, [f"experiments/{exp}.yaml", "configs/analysis/paper.yaml"], [])
        for name, exp in (
            ("resnet", "resnet50_cifar100"),
            ("vit", "vit_ti_cifar100"),
            ("alternet", "alter_r50"),
        )
    ]
    + [
        (f"buildup_{k}", ["experiments/alter_r50.yaml", f"experiments/buildup/step_{k}.yaml"], [])
        for k in range(7)
    ],
}


def scale_arguments(scale: str, data_dir: str | None = None, slurm: bool | None = None) -> list[list[str]]:
    """The `fit` arguments of each run of a scale. At the paper scale: the trainer config
    (configs/trainer/slurm.yaml inside a SLURM job, else ddp.yaml), CIFAR-100 from `data_dir`
    (default $DATA_DIR or data/), and the corruption analysis when `<data_dir>/CIFAR-100-C` exists."""
    out = []
    for _, configs, flags in SCALES[scale]:
        args = [a for c in configs for a in ("--config", c)] + list(flags)
        if scale == "paper":
            data_dir = data_dir or os.environ.get("DATA_DIR") or "data"
            slurm = bool(os.environ.get("SLURM_JOB_ID")) if slurm is None else slurm
            args[2:2] = ["--config", f"configs/trainer/{'slurm' if slurm else 'ddp'}.yaml"]
            args.append(f"--data.init_args.root={data_dir}")
            corrupted = Path(data_dir) / "CIFAR-100-C"
            if "configs/analysis/paper.yaml" in configs and corrupted.is_dir():
                args += [
                    "--analyses+=alternet_pl.callbacks.robustness.CorruptionCallback",
                    f"--analyses.root={corrupted}",
                    "--analyses.image_size=32",
                ]
        out.append(args)
    return out


#: the table's training columns: (metrics.csv key, "max"/"min" for the best value)
METRIC_COLUMNS = (("val/acc1", "max"), ("val/acc5", "max"), ("val/nll", "min"), ("val/ece", "min"))
#: the table's headline analysis scalars: (analysis, scalar key, column title)
SCALAR_COLUMNS = (
    ("hessian", "top_eig", "top eig"),
    ("hessian", "min_eig", "min eig"),
    ("hessian", "trace", "trace"),
    ("landscape", "edge_increase", "landscape edge rise"),
    ("trajectory", "path_length", "path length"),
    ("fourier", "hf_change_msa", "Δhf MSA"),
    ("fourier", "hf_change_conv", "Δhf Conv"),
    ("variance", "var_change_msa", "Δlog var MSA"),
    ("variance", "var_change_conv", "Δlog var Conv"),
    ("lesion", "drop_msa", "lesion drop MSA"),
    ("lesion", "drop_conv", "lesion drop Conv"),
    ("corruption", "mean_corruption_error", "corruption error"),
    ("corruption", "mce", "mCE"),
)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def results_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): per run the final and best of each validation metric and the headline scalars
    of its latest analyses; "-" where a run has no such value. Scalar columns no run has are left out."""
    scalars = [c for c in SCALAR_COLUMNS if any(r.scalar(c[0], c[1]) is not None for r in runs)]
    freq = any(r.record("freq_noise") is not None for r in runs)
    header = ["run", "model"]
    for key, mode in METRIC_COLUMNS:
        header += [f"{key} final", f"{key} {'best' if mode == 'max' else 'min'}"]
    header += [title for _, _, title in scalars]
    if freq:
        header.append("freq noise worst Δacc")
    rows = []
    for run in runs:
        row = [run.label, run.model]
        for key, mode in METRIC_COLUMNS:
            row += [_cell(run.final_metric(key)), _cell(run.best_metric(key, mode))]
        row += [_cell(run.scalar(a, k)) for a, k, _ in scalars]
        if freq:
            rec = run.record("freq_noise")
            row.append(_cell(min(rec.delta)) if rec is not None and rec.delta else "-")
        rows.append(row)
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def missing_analyses(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Per run label, one line per analysis that failed (its error record), was configured but wrote
    no result, or that other runs have but this one lacks. Runs with nothing missing are left out."""
    present = {name for run in runs for name in ANALYSIS_NAMES if run.has(name)}
    out: dict[str, list[str]] = {}
    for run in runs:
        lines = []
        failed = {}
        for err in run.errors:
            failed.setdefault(err.analysis, []).append(err)
        for name, errs in failed.items():
            first = errs[-1].message.strip().splitlines()[0] if errs[-1].message.strip() else "failed"
            stems = ", ".join(e.stem for e in errs)
            state = "failed" if not run.has(name) else "failed at some points"
            lines.append(f"{name}: {state} ({stems}): {first} [{errs[-1].path}]")
        configured = run.configured_analyses
        if not configured and not failed and not any(run.has(name) for name in ANALYSIS_NAMES):
            others = ", ".join(n for n in ANALYSIS_NAMES if n in present)
            lines.append(f"no analyses configured (training only); other runs have: {others}")
            out[run.label] = lines
            continue
        for name in ANALYSIS_NAMES:
            if run.has(name) or name in failed:
                continue
            if name in run.unreadable:
                lines.append(f"{name}: {run.unreadable[name]}")
                continue
            if name in configured:
                lines.append(f"{name}: configured but wrote no result (run interrupted before it ran?)")
            elif name in present:
                lines.append(f"{name}: missing (not configured for this run; other runs have it)")
        if lines:
            out[run.label] = lines
    return out


class Report:
    """The figures, table and missing-analysis lines of a set of runs, and their written files."""

    def __init__(self, runs: Sequence[Run], official_csv: Sequence[Path] = ()) -> None:
        self.runs = list(runs)
        self.official = {compare.official_label(p): read_official_csv(p) for p in official_csv}
        self.header, self.rows = results_table(self.runs)
        self.missing = missing_analyses(self.runs)
        self.figures: list[compare.ComparisonFigure] = []
        self.absent: list[str] = []  # figures no run has data for
        for name, draw in self._drawers():
            fig = draw(self.runs)
            if fig is None:
                self.absent.append(name)
            else:
                self.figures.append(fig)

    def _drawers(self):
        yield "training curves (metrics.csv)", compare.training_curves_figure
        yield "Hessian spectra (hessian with spectrum: true)", compare.hessian_spectrum_figure
        yield (
            "loss landscapes (landscape, dims 2)",
            lambda runs: compare.landscape_figure(runs, self.official),
        )
        yield "trajectories (trajectory)", compare.trajectory_figure
        yield "Fourier by depth (fourier)", lambda runs: compare.depth_figure(runs, "fourier")
        yield "variance by depth (variance)", lambda runs: compare.depth_figure(runs, "variance")
        yield "frequency noise (freq_noise)", compare.freq_noise_figure
        yield "corruptions and mCE (corruption)", compare.corruption_figure
        yield "lesion (lesion)", lambda runs: compare.depth_figure(runs, "lesion")
        yield (
            "build-up curve (two or more runs whose config gives msa_per_stage or layout)",
            compare.buildup_figure,
        )

    def write(self, out: Path) -> list[Path]:
        """Write figures (PNG + PDF), table_results.md, report.md and index.html; return the paths."""
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for fig in self.figures:
            for fmt in FIGURE_FORMATS:
                written.append(write_figure(out / f"{fig.name}.{fmt}", fig.figure))  # closes it
        table = _markdown_table(self.header, self.rows)
        written.append(write_text(out / "table_results.md", table))
        written.append(write_text(out / "report.md", self.markdown(table)))
        written.append(write_text(out / "index.html", self.html()))
        return written

    # ---- the two documents ------------------------------------------------------------------------
    def markdown(self, table: str) -> str:
        lines = ["# alternet-pl report", "", "Runs: " + ", ".join(f"`{r.path}`" for r in self.runs), ""]
        lines += ["## Results", "", table]
        lines += ["## Figures", ""]
        for fig in self.figures:
            lines += [
                f"### {fig.title}",
                "",
                f"![{fig.title}]({fig.name}.png) ([PDF]({fig.name}.pdf))",
                "",
                f"- **Paper:** {fig.paper}",
                f"- **These runs:** {fig.observed}",
                "",
            ]
        lines += ["## Missing or failed analyses", ""]
        lines += self._missing_lines(markdown=True)
        return "\n".join(lines) + "\n"

    def _missing_lines(self, markdown: bool) -> list[str]:
        lines = []
        for label, items in self.missing.items():
            lines.append(f"- **{label}**" if markdown else label)
            lines += [f"  - {item}" for item in items]
        if not self.missing:
            lines.append("Every run has every analysis the others have; none failed.")
        if self.absent:
            lines += ["", "Figures without data in any run: " + "; ".join(self.absent) + "."]
        return lines

    def html(self) -> str:
        e = html.escape
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'><title>alternet-pl report</title>",
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;"
            "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
            "figure{margin:2em 0;border-top:1px solid #ddd}.missing li{color:#a00}</style></head><body>",
            "<h1>alternet-pl report</h1>",
            "<p>Runs: " + ", ".join(f"<code>{e(str(r.path))}</code>" for r in self.runs) + "</p>",
            "<h2>Results</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in self.header) + "</tr>",
        ]
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in self.rows]
        parts.append("</table><h2>Figures</h2>")
        for fig in self.figures:
            parts.append(
                f"<figure id='{fig.name}'><h3>{e(fig.title)}</h3>"
                f"<a href='{fig.name}.pdf'><img src='{fig.name}.png' alt='{e(fig.title)}'></a>"
                f"<figcaption><p><b>Paper:</b> {e(fig.paper)}</p>"
                f"<p><b>These runs:</b> {e(fig.observed)}</p></figcaption></figure>"
            )
        parts.append("<h2>Missing or failed analyses</h2><ul class='missing'>")
        for label, items in self.missing.items():
            parts.append(
                f"<li><b>{e(label)}</b><ul>" + "".join(f"<li>{e(i)}</li>" for i in items) + "</ul></li>"
            )
        parts.append("</ul>")
        if not self.missing:
            parts.append("<p>Every run has every analysis the others have; none failed.</p>")
        if self.absent:
            parts.append("<p>Figures without data in any run: " + e("; ".join(self.absent)) + ".</p>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"


def build_report(
    run_dirs: Sequence[str | Path], out: str | Path, official_csv: Sequence[str | Path] = ()
) -> Report:
    """Read the runs, draw and write everything into `out`; returns the `Report` (figures closed)."""
    report = Report([load_run(p) for p in run_dirs], [Path(p) for p in official_csv])
    report.written = report.write(Path(out))
    return report


def write_smoke_corruptions(root: Path = SMOKE_CORRUPTIONS, num_images: int = 500, seed: int = 7) -> Path:
    """A small CIFAR-C-layout set from the synthetic images (`<corruption>.npy` of 5 severities +
    `labels.npy`): Gaussian noise, a box blur (defocus), contrast and brightness, each harder with the
    severity. Noise and blur hit the high-frequency texture cue, contrast both cues. Returns `root`."""
    from alternet_pl.data.synthetic import make_synthetic

    images, labels = make_synthetic(num_images, seed=seed)
    x = images.astype(np.float64) / 255.0
    rng = np.random.default_rng(seed)

    def blur(a: np.ndarray, r: int) -> np.ndarray:
        out = np.zeros_like(a)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                out += np.roll(a, (dy, dx), axis=(1, 2))
        return out / (2 * r + 1) ** 2

    corrupt = {
        "gaussian_noise": lambda a, s: a + rng.normal(0, (0.04, 0.08, 0.12, 0.18, 0.26)[s - 1], a.shape),
        "defocus_blur": lambda a, s: blur(a, s),
        "contrast": lambda a, s: (
            (a - a.mean((1, 2, 3), keepdims=True)) * (0.7, 0.5, 0.35, 0.2, 0.1)[s - 1]
            + a.mean((1, 2, 3), keepdims=True)
        ),
        "brightness": lambda a, s: a + (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1],
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, fn in corrupt.items():
        stack = np.concatenate([fn(x, s) for s in range(1, 6)])
        np.save(root / f"{name}.npy", (np.clip(stack, 0, 1) * 255).round().astype(np.uint8))
    np.save(root / "labels.npy", np.tile(labels, 5))
    return root


def train_scale(scale: str) -> list[Path]:
    """Train the scale's runs (with their analyses) and return their run directories."""
    from alternet_pl import fit

    if scale == "smoke":
        write_smoke_corruptions()
    runs = []
    for args in scale_arguments(scale):
        cli = fit.main(args)
        runs.append(cli.run_dir)
    return runs


def _has_results(run: Path) -> bool:
    """Whether a run directory holds any logged metric row or analysis result to draw."""
    metrics = run / "metrics.csv"
    if metrics.is_file() and len(metrics.read_text().splitlines()) > 1:
        return True
    return any(p for p in run.glob("analysis/*/*.json") if not p.name.endswith(".error.json"))


def main(argv: Sequence[str] | None = None) -> Report | None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (runs/<experiment>/<version>)")
    parser.add_argument("--scale", choices=sorted(SCALES), help="train the runs first (smoke: CPU minutes)")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="where figures and pages go")
    parser.add_argument(
        "--official-csv",
        type=Path,
        nargs="*",
        default=[],
        help="official loss-landscape CSV grids to draw beside ours",
    )
    parser.add_argument(
        "--wandb", action="store_true", help="also log the figures and the table to a W&B run of their own"
    )
    parser.add_argument("--wandb-project", default="alternet-pl", help="W&B project (default alternet-pl)")
    args = parser.parse_args(argv)
    runs = list(args.runs)
    for run in runs:
        try:
            load_run(run)
        except ValueError as err:
            parser.error(str(err))
    for path in args.official_csv:
        if not path.is_file():
            parser.error(f"--official-csv {path} does not exist")
    if args.scale:
        runs += train_scale(args.scale)
        if global_rank_from_env() != 0:  # under SLURM every task trained; rank 0 draws
            return None
    if not runs:
        parser.error("give run directories or --scale smoke|paper")
    empty = [str(run) for run in runs if not _has_results(run)]
    if len(empty) == len(runs):
        raise InputError(
            f"no results in {', '.join(empty)}: no metrics.csv rows and no analysis result files; "
            "train the runs first (python -m alternet_pl.fit ...) or pass run directories that have results"
        )
    report = build_report(runs, args.out, args.official_csv)
    print("Report written:\n" + "\n".join(f"  {p}" for p in report.written if p.suffix != ".pdf"))
    if args.wandb:
        from alternet_pl.loggers.tables import log_report

        url = log_report(report, args.out, project=args.wandb_project)
        print(f"W&B comparison run: {url}")
    return report


if __name__ == "__main__":
    run_command(main, sys.argv[1:])
