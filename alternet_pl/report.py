"""`python -m alternet_pl.report RUN_DIR [RUN_DIR ...]`: the paper's figures and tables from result files.

Reads only what runs wrote (`metrics.csv`, `analysis/<name>/*.json|npz`), so figures can be redrawn
without re-running anything. `--scale smoke|paper` first trains the paper's model trio (ResNet,
ViT, AlterNet: micro models on synthetic data on a CPU in minutes, or the real CIFAR-100 recipes on
GPUs) with the analysis suite, then draws the comparison figures (`make reproduce-figures`).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from alternet_pl.analysis.records import (  # noqa: E402
    AnalysisRecord,
    FourierRecord,
    FreqNoiseRecord,
    HessianRecord,
    LandscapeRecord,
    LesionRecord,
    VarianceRecord,
)
from alternet_pl.analysis.results import write_figure, write_text  # noqa: E402
from alternet_pl.plots.features import plot_freq_noise, scatter_by_kind  # noqa: E402
from alternet_pl.plots.landscape import read_official_csv, side_by_side  # noqa: E402

#: the model trio each scale trains: (label, config files, extra flags)
SCALES: dict[str, list[tuple[str, list[str], list[str]]]] = {
    "smoke": [
        (
            name,
            ["experiments/quickstart.yaml", "configs/analysis/light.yaml"],
            [f"--model.model={model}", f"--experiment=smoke_{name}"],
        )
        for name, model in (
            ("resnet", "resnet_cifar_micro"),
            ("vit", "vit_cifar_micro"),
            ("alternet", "alternet_cifar_micro"),
        )
    ],
    "paper": [
        (name, [f"experiments/{exp}.yaml", "configs/trainer/ddp.yaml", "configs/analysis/paper.yaml"], [])
        for name, exp in (
            ("resnet", "resnet50_cifar100"),
            ("vit", "vit_ti_cifar100"),
            ("alternet", "alter_r50"),
        )
    ],
}


def latest(run: Path, analysis: str, suffix: str = ".json") -> Path | None:
    """The result file of the last epoch an analysis wrote in a run (None if it never ran)."""
    files = sorted(
        (run / "analysis" / analysis).glob(f"*{suffix}"),
        key=lambda p: int(m.group(1)) if (m := re.search(r"epoch=(\d+)", p.name)) else -1,
    )
    return files[-1] if files else None


R = TypeVar("R", bound=AnalysisRecord)


def latest_record(run: Path, analysis: str, kind: type[R]) -> R | None:
    """The latest record of an analysis in a run (None if it never ran).

    Raises:
        RecordError: the file lacks a field of `kind` (written by another version).
    """
    path = latest(run, analysis)
    return kind.from_files(path) if path else None


def run_label(run: Path) -> str:
    return f"{run.parent.name}/{run.name}"


def final_metrics(run: Path) -> dict[str, float]:
    """The last logged value of every val/* column of a run's metrics.csv."""
    path = run / "metrics.csv"
    if not path.is_file():
        return {}
    out: dict[str, float] = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key and key.startswith("val/") and value not in ("", None):
                    out[key] = float(value)
    return out


def accuracy_table(runs: Sequence[Path], out: Path) -> Path:
    cols = ["val/acc1", "val/acc5", "val/nll", "val/ece"]
    analysis_cols = ["hessian/top_eig", "hessian/min_eig", "hessian/trace", "landscape/center_loss"]
    header = ["run", *cols, *analysis_cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        metrics = final_metrics(run)
        row = [run_label(run)] + [f"{metrics[c]:.4f}" if c in metrics else "-" for c in cols]
        hessian = latest_record(run, "hessian", HessianRecord)
        landscape = latest_record(run, "landscape", LandscapeRecord)
        values = [
            hessian.top_eig if hessian else None,
            hessian.min_eig if hessian else None,
            hessian.trace if hessian else None,
            landscape.center_loss if landscape else None,
        ]
        row += [f"{v:.4g}" if isinstance(v, int | float) else "-" for v in values]
        lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    write_text(out / "table_results.md", text)
    return out / "table_results.md"


def _by_depth_panels(
    runs: Sequence[Path],
    analysis: str,
    kind: type[FourierRecord | VarianceRecord | LesionRecord],
    values: Callable[[Any], Sequence[float]],
    ylabel: str,
    logy: bool = False,
):
    found = [(run, r) for run in runs if (r := latest_record(run, analysis, kind))]
    if not found:
        return None
    fig, axes = plt.subplots(1, len(found), figsize=(4.2 * len(found), 3.4), squeeze=False, sharey=not logy)
    for ax, (run, record) in zip(axes[0], found):
        scatter_by_kind(ax, record.depth, values(record), record.kinds)
        ax.set_title(run_label(run))
        if logy:
            ax.set_yscale("log")
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def hessian_figure(runs: Sequence[Path]):
    """Paper Fig. 1 style: the per-run distribution of Hessian eigenvalues (per-batch spectrum when
    recorded, else the SLQ density nodes weighted by their weights)."""
    found = [(run, r) for run in runs if (r := latest_record(run, "hessian", HessianRecord))]
    if not found:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for run, record in found:
        if record.spectrum is not None:
            values = np.asarray(record.spectrum, dtype=float).reshape(-1)
            ax.hist(values, bins=30, density=True, histtype="step", lw=1.5, label=run_label(run))
        elif record.density_nodes is not None:
            nodes = np.asarray(record.density_nodes).reshape(-1)
            weights = np.asarray(record.density_weights).reshape(-1)
            ax.hist(
                nodes, bins=30, weights=weights, density=True, histtype="step", lw=1.5, label=run_label(run)
            )
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel="Hessian eigenvalue", ylabel="density", title="Hessian eigenvalue spectra")
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def landscape_figure(runs: Sequence[Path], official: Sequence[Path] = ()):
    grids = {}
    for run in runs:
        record = latest_record(run, "landscape", LandscapeRecord)
        if record is not None and record.dims == 2:
            grids[run_label(run)] = {"x": record.coords, "y": record.coords, "loss": record.loss}
    for path in official:
        grids[f"official: {Path(path).stem}"] = read_official_csv(path)
    return side_by_side(grids) if grids else None


def draw(runs: Sequence[Path], out: Path, official: Sequence[Path] = ()) -> list[Path]:
    """Every figure and table the runs have data for; returns the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [accuracy_table(runs, out)]
    figures = {
        "fig1_hessian_spectra": hessian_figure(runs),
        "fig_landscape": landscape_figure(runs, official),
        "fig2a_fourier_hf_by_depth": _by_depth_panels(
            runs, "fourier", FourierRecord, lambda r: r.hf, r"$\Delta$ log amplitude at $\pi$"
        ),
        "fig_variance_by_depth": _by_depth_panels(
            runs, "variance", VarianceRecord, lambda r: r.variance, "feature map variance", logy=True
        ),
        "fig_lesion_by_depth": _by_depth_panels(
            runs, "lesion", LesionRecord, lambda r: r.drop, "accuracy drop"
        ),
    }
    noise = [(run_label(run), r) for run in runs if (r := latest_record(run, "freq_noise", FreqNoiseRecord))]
    if noise:
        figures["fig2b_freq_noise"] = plot_freq_noise([(label, r.freqs, r.delta) for label, r in noise])
    for name, fig in figures.items():
        if fig is not None:
            written.append(write_figure(out / f"{name}.png", fig))
    return written


def train_scale(scale: str) -> list[Path]:
    """Train the scale's model trio (with analyses) and return their run directories."""
    from alternet_pl import fit

    runs = []
    for _, configs, flags in SCALES[scale]:
        args = [a for c in configs for a in ("--config", c)] + flags
        cli = fit.main(args)
        runs.append(cli.run_dir)
    return runs


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (runs/<experiment>/<version>)")
    parser.add_argument(
        "--scale", choices=sorted(SCALES), help="train the model trio first (smoke: CPU minutes)"
    )
    parser.add_argument("--out", type=Path, default=Path("figures"), help="where figures and tables go")
    parser.add_argument(
        "--official-csv",
        type=Path,
        nargs="*",
        default=[],
        help="official loss-landscape CSV grids to draw beside ours",
    )
    args = parser.parse_args(argv)
    runs = list(args.runs)
    for run in runs:
        if not (run / "metrics.csv").is_file() and not (run / "analysis").is_dir():
            parser.error(f"{run} is not a run directory (no metrics.csv or analysis/ inside)")
    if args.scale:
        runs += train_scale(args.scale)
    if not runs:
        parser.error("give run directories or --scale smoke|paper")
    written = draw(runs, args.out, args.official_csv)
    print("Figures and tables written:\n" + "\n".join(f"  {p}" for p in written))
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
