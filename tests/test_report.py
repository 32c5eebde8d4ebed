"""The report on hand-written result files with known numbers: the table holds them, each figure has
the expected series, shared scales and axis labels, and a missing or failed analysis is named."""

from __future__ import annotations

import re

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from alternet_pl import report  # noqa: E402
from alternet_pl.analysis.records import (  # noqa: E402
    FourierRecord,
    FreqNoiseRecord,
    HessianRecord,
    LandscapeRecord,
    LesionRecord,
)
from alternet_pl.plots import MODEL_STYLE, compare  # noqa: E402
from alternet_pl.plots.rundata import load_run  # noqa: E402
from alternet_pl.runs import result_stem, write_error_record  # noqa: E402

KINDS = ["stem", "conv", "msa", "conv", "msa"]
DEPTH = [0.0, 0.25, 0.5, 0.75, 1.0]


def make_run(root, name, model, *, acc=(0.5, 0.7, 0.6), spectrum=None, layout=None, skip=(), error=None):
    """A run directory with config.yaml, metrics.csv and one result per analysis (except `skip`)."""
    run = root / name / "version_0"
    run.mkdir(parents=True)
    kwargs = f"\n    kwargs:\n      layout: {layout}" if layout else ""
    analyses = "".join(
        f"\n  - class_path: alternet_pl.callbacks.{m}.{c}"
        for m, c in [
            ("hessian", "HessianCallback"),
            ("landscape", "LandscapeCallback"),
            ("fourier", "FourierCallback"),
            ("lesion", "LesionCallback"),
        ]
    )
    (run / "config.yaml").write_text(
        f"experiment: {name}\nmodel:\n  network:\n    name: {model}{kwargs}\nanalyses:{analyses}\n"
    )
    lines = ["epoch,step,train/loss_epoch,val/acc1,val/nll"]
    for epoch, a in enumerate(acc):
        lines.append(f"{epoch},{10 * epoch + 9},,{a},{1 - a}")
        lines.append(f"{epoch},{10 * epoch + 9},{2.0 - a},,")
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    out = run / "analysis"
    layers = [f"layer{i}" for i in range(len(KINDS))]
    if "hessian" not in skip:
        spec = np.asarray(spectrum if spectrum is not None else [[-1.0, 10.0], [-2.0, 12.0]])
        for stem, top in (("epoch=001", 999.0), ("epoch=003", float(spec.max()))):  # the older one first
            HessianRecord(
                eigenvalues=np.array([top]),
                residuals=np.zeros(2),
                top_eig=top,
                min_eig=float(spec.min()),
                converged=True,
                num_params=100,
                num_samples=32,
                num_hvps=8,
                spectrum=spec,
            ).to_files(out / "hessian", stem)
    if "landscape" not in skip:
        coords = np.linspace(-1, 1, 5)
        scale = 100.0 if "resnet" in model else 1.0
        loss = 0.1 + scale * (coords[:, None] ** 2 + coords[None, :] ** 2)
        LandscapeRecord(
            coords=coords,
            loss=loss,
            nll=loss,
            acc=1 - loss / loss.max(),
            center_loss=0.1,
            center_acc=1.0,
            edge_increase=1.0,
            max_increase=2.0 * scale,
            num_samples=64,
        ).to_files(out / "landscape", "epoch=003")
    if "fourier" not in skip:
        hf = [0.0, 0.5, -0.2, 0.6, -0.3]
        FourierRecord(
            layers=layers,
            kinds=KINDS,
            depth=DEPTH,
            by_kind={"hf_change_msa": -0.75, "hf_change_conv": 0.65},
            hf=hf,
            curves=[[0.0, h] for h in hf],
        ).to_files(out / "fourier", "epoch=003")
    if "lesion" not in skip:
        drop = [0.0, 0.1, 0.3, 0.05, 0.4]
        LesionRecord(
            layers=layers,
            kinds=KINDS,
            depth=DEPTH,
            by_kind={"drop_msa": 0.35},
            clean_acc=0.9,
            acc=[0.9 - d for d in drop],
            drop=drop,
        ).to_files(out / "lesion", "epoch=003")
    if "freq_noise" not in skip:
        delta = [-0.01, -0.2, -0.05] if "vit" in model else [-0.02, -0.03, -0.3]
        FreqNoiseRecord(
            freqs=[0.1, 0.5, 0.9],
            eps=1.0,
            width=0.2,
            clean_acc=0.9,
            acc=[0.9 + d for d in delta],
            delta=delta,
        ).to_files(out / "freq_noise", "epoch=003")
    if error:  # written as a failing analysis writes it
        try:
            raise RuntimeError(f"{error} blew up: out of memory")
        except RuntimeError as err:
            write_error_record(run, error, result_stem(3), 3, err)
    return run


@pytest.fixture
def runs(tmp_path):
    return [
        make_run(tmp_path, "resnet", "resnet_cifar_micro", layout="[C, C, CC, CC]", acc=(0.5, 0.8, 0.75)),
        make_run(tmp_path, "vit", "vit_cifar_micro", spectrum=[[-18.0, 3.0], [-4.0, 2.0]], skip=("lesion",)),
        make_run(
            tmp_path,
            "alternet",
            "alternet_cifar_micro",
            layout="[C, C, CM, CM]",
            acc=(0.6, 0.9, 0.85),
            error="lesion",
            skip=("lesion",),
        ),
    ]


def test_table_holds_the_known_numbers(runs):
    header, rows = report.results_table([load_run(r) for r in runs])
    table = {row[0]: dict(zip(header, row)) for row in rows}
    assert table["resnet/version_0"]["val/acc1 final"] == "0.75"
    assert table["resnet/version_0"]["val/acc1 best"] == "0.8"
    assert table["alternet/version_0"]["val/nll min"] == "0.1"
    assert table["vit/version_0"]["min eig"] == "-18"  # the latest stem (epoch=003), not epoch=001's 0
    assert table["resnet/version_0"]["top eig"] == "12"
    assert table["vit/version_0"]["lesion drop MSA"] == "-"
    assert table["resnet/version_0"]["freq noise worst Δacc"] == "-0.3"


def test_figures_series_labels_and_shared_scales(runs):
    loaded = [load_run(r) for r in runs]
    hess = compare.hessian_spectrum_figure(loaded)
    ax = hess.figure.axes[0]
    assert len(ax.get_legend().get_texts()) == 3
    assert ax.get_xlim()[0] < -18  # negative eigenvalues on the axis
    assert "Hessian eigenvalue" in hess.figure.axes[1].get_xlabel()
    assert "ViT's min eigenvalue -18 is the most negative" in hess.observed
    assert "ResNet's top eigenvalue 12 is the largest" in hess.observed

    land = compare.landscape_figure(loaded)
    contours = [a for a in land.figure.axes if a.collections and a.get_xlabel() == "direction 1"]
    assert len(contours) == 3
    norms = {(c.norm.vmin, c.norm.vmax, type(c.norm).__name__) for a in contours for c in a.collections[:1]}
    assert len(norms) == 1 and norms.pop()[2] == "LogNorm"  # one colour scale, log for a 0.1..200 range
    slices = land.figure.axes[-1]
    assert len(slices.get_lines()) == 3 and slices.get_ylabel() == "loss"
    assert "vit_cifar_micro" not in land.observed and "is the flattest" in land.observed

    four = compare.depth_figure(loaded, "fourier")
    assert len(four.figure.axes) == 3
    for a in four.figure.axes:
        assert a.get_xlabel() == "normalised depth"
        assert {c.get_label() for c in a.collections} == {"Stem", "Conv", "MSA"}
    assert four.figure.axes[0].get_ylabel().startswith(r"$\Delta$ log amplitude")
    assert "MSA -0.75" in four.observed and "Conv 0.65" in four.observed

    lesion = compare.depth_figure(loaded, "lesion")
    assert len(lesion.figure.axes) == 1  # only the ResNet run has lesion results

    noise = compare.freq_noise_figure(loaded)
    lines = [ln for ln in noise.figure.axes[0].get_lines() if len(ln.get_xdata()) == 3]
    assert len(lines) == 3
    assert [ln.get_color() for ln in lines] == [MODEL_STYLE[k][0] for k in ("resnet", "vit", "alter")]
    assert "ViT loses most at 0.5π (-20.0 points" in noise.observed

    curves = compare.training_curves_figure(loaded)
    assert [len(a.get_lines()) for a in curves.figure.axes] == [3, 3]
    assert curves.figure.axes[1].get_ylabel() == "validation accuracy (%)"

    build = compare.buildup_figure(loaded)  # ResNet (0 MSAs) and AlterNet (2); ViT has no layout
    xs = [ln.get_xdata()[0] for ln in build.figure.axes[0].get_lines()[1:]]
    assert xs == [0, 2] and "2 MSA: 90.0%" in build.observed


def test_missing_and_failed_analyses_are_named(runs):
    (runs[1] / "analysis" / "fourier" / "epoch=003.json").write_text('{"record": "Four')  # cut short
    missing = report.missing_analyses([load_run(r) for r in runs])
    vit = "\n".join(missing["vit/version_0"])
    assert "lesion: configured but wrote no result" in vit
    assert "fourier: epoch=003.json unreadable" in vit
    alter = "\n".join(missing["alternet/version_0"])
    assert "lesion: failed (epoch=003): RuntimeError: lesion blew up: out of memory" in alter
    assert "resnet/version_0" not in missing


def test_report_files_open_from_disk(runs, tmp_path):
    out = tmp_path / "out"
    rep = report.main([*map(str, runs), "--out", str(out)])
    names = {f.name for f in rep.figures}
    assert names >= {
        "fig1c_hessian_spectra",
        "fig1a_loss_landscapes",
        "fig2a_fourier_by_depth",
        "fig11_buildup",
    }
    for name in names:
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.pdf").read_bytes()[
            :4
        ] == b"%PDF"
    page = (out / "index.html").read_text()
    assert set(re.findall(r"src='([^']+)'", page)) == {f"{n}.png" for n in names}  # relative paths
    assert "lesion blew up" in page and "ViT&#x27;s min eigenvalue -18" in page
    # the results table (a column per logged scalar: wider than the page at the CPU scale) scrolls in its box
    assert re.search(r"<h2>Results</h2><div class='wide'><table>.*?</table></div>", page, re.S)
    assert ".wide{overflow-x:auto}" in page
    md = (out / "report.md").read_text()
    assert "| resnet/version_0 | resnet_cifar_micro | 0.75 | 0.8 |" in md
    assert "Missing or failed analyses" in md and "trajectories (trajectory)" in md  # absent figure named


def test_not_a_run_directory_is_one_clear_error(tmp_path, capsys):
    from alternet_pl.errors import run_command

    with pytest.raises(SystemExit) as stopped:
        run_command(report.main, [str(tmp_path), "--out", str(tmp_path / "o")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "is not a run directory" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing written


def test_smoke_suite_config_builds_every_analysis():
    from jsonargparse import ArgumentParser

    from alternet_pl.callbacks.base import AnalysisCallback

    parser = ArgumentParser()
    parser.add_argument("--analyses", type=list[AnalysisCallback])
    analyses = parser.instantiate(parser.parse_path("configs/analysis/smoke.yaml")).analyses
    by_name = {a.name: a for a in analyses}
    assert set(by_name) == set(report.ANALYSIS_NAMES)
    assert by_name["hessian"].options.spectrum.enabled and by_name["hessian"].data.num_batches >= 8
    assert len(by_name["freq_noise"].options.freqs) == 9
