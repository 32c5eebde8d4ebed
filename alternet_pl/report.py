"""`python -m alternet_pl.report RUN_DIR [RUN_DIR ...] --out DIR`: the paper's figures from result files.

Reads only what runs wrote (`config.yaml`, `metrics.csv`, `analysis/<name>/*`; see
`alternet_pl.plots.rundata`), so figures are redrawn without re-running anything. Writes into `--out`:
every comparison figure the runs have data for (PNG and PDF), `table_results.md`, `report.md` and a
static `index.html` (opens from disk; images by relative path) with the results table, each figure
with what the paper shows there and what these runs show, and the missing or failed analyses of each
run. `--wandb` also logs the figures and the table to a W&B run of their own. The report only draws:
`python -m alternet_pl.reproduce --scale smoke|paper` trains a scale's runs first, then calls it.
"""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from alternet_pl.analysis.files import write_figure, write_text  # noqa: E402
from alternet_pl.errors import InputError, OneLineArgumentParser, run_command  # noqa: E402
from alternet_pl.plots import compare  # noqa: E402
from alternet_pl.plots.findings import findings, findings_html, findings_markdown, write_findings  # noqa: E402
from alternet_pl.plots.landscape import read_official_csv  # noqa: E402
from alternet_pl.plots.rundata import ANALYSIS_NAMES, Run, load_run  # noqa: E402
from alternet_pl.plots.spread import landscape_spread_figure  # noqa: E402
from alternet_pl.runs import has_results  # noqa: E402

__all__ = [
    "FIGURE_FORMATS",
    "Report",
    "add_render_arguments",
    "build_report",
    "check_render_arguments",
    "main",
    "missing_analyses",
    "render",
    "results_table",
]

#: every figure is written in these formats
FIGURE_FORMATS = ("png", "pdf")

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
            first = errs[-1].error.strip().splitlines()[0] if errs[-1].error.strip() else "failed"
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
        self.findings = findings(self.runs)  # the verdicts (alternet_pl.plots.findings)
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
        yield "landscape spread (landscape, two or more seeds of a model)", landscape_spread_figure
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
        written.append(write_findings(self.findings, out / "findings.json"))
        written.append(write_text(out / "report.md", self.markdown(table)))
        written.append(write_text(out / "index.html", self.html()))
        return written

    # ---- the two documents ------------------------------------------------------------------------
    def markdown(self, table: str) -> str:
        lines = ["# alternet-pl report", "", "Runs: " + ", ".join(f"`{r.path}`" for r in self.runs), ""]
        lines += ["## Results", "", table]
        lines += ["## Findings: the paper's claims on these runs", "", findings_markdown(self.findings)]
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
            "text-align:right}td:first-child,th:first-child{text-align:left}"
            # figures at their own size (labels readable), wide ones in a scroll box
            "figure a{display:block;overflow-x:auto}figure img{max-width:none}"
            "figure{margin:2em 0;border-top:1px solid #ddd}.missing li{color:#a00}"
            ".wide{overflow-x:auto}</style></head><body>",  # the results table: as many columns as analyses
            "<h1>alternet-pl report</h1>",
            "<p>Runs: " + ", ".join(f"<code>{e(str(r.path))}</code>" for r in self.runs) + "</p>",
            "<h2>Results</h2><div class='wide'><table><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in self.header)
            + "</tr>",
        ]
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in self.rows]
        parts.append(
            "</table></div><h2>Findings: the paper's claims on these runs</h2>" + findings_html(self.findings)
        )
        parts.append("<h2>Figures</h2>")
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


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """The drawing options (`--out`, `--official-csv`, `--wandb`, `--wandb-project`), shared with
    `alternet_pl.reproduce`."""
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


def check_render_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit through `parser.error` (one line, exit 2) when an `--official-csv` file does not exist."""
    for path in args.official_csv:
        if not path.is_file():
            parser.error(f"--official-csv {path} does not exist")


def render(runs: Sequence[Path], args: argparse.Namespace) -> Report:
    """Draw the report of `runs` into `args.out` (and W&B with `args.wandb`); print what was written.
    Raises `InputError` when none of the runs holds a result."""
    empty = [str(run) for run in runs if not has_results(run)]
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


def main(argv: Sequence[str] | None = None) -> Report:
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (runs/<experiment>/<version>)")
    parser.add_argument("--scale", help=argparse.SUPPRESS)  # moved: a one-line pointer below
    add_render_arguments(parser)
    args = parser.parse_args(argv)
    if args.scale:
        parser.error(f"the report only draws; to train: python -m alternet_pl.reproduce --scale {args.scale}")
    if not args.runs:
        parser.error("give run directories (to train first: python -m alternet_pl.reproduce --scale smoke)")
    for run in args.runs:
        try:
            load_run(run)
        except ValueError as err:
            parser.error(str(err))
    check_render_arguments(parser, args)
    return render(list(args.runs), args)


if __name__ == "__main__":
    run_command(main, sys.argv[1:])
