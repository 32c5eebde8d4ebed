"""The report's verdicts (alternet_pl.plots.findings / claims): each statistic against a second
computation straight from the result files, the verdict rule, and verdicts that follow the records."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from alternet_pl import report  # noqa: E402
from alternet_pl.analysis.records import (  # noqa: E402
    CorruptionRecord,
    FourierRecord,
    FreqNoiseRecord,
    HessianRecord,
    LandscapeRecord,
    LesionRecord,
    VarianceRecord,
)
from alternet_pl.plots.findings import (  # noqa: E402
    _fmt,
    findings,
    layer_pair_changes,
    pair_changes_by_resolution,
    verdict_of,
)
from alternet_pl.plots.rundata import load_run  # noqa: E402

STEM = "epoch=002"
# stem, then stage 0 (32 px) and stage 1 (16 px): the pair stages.0.1 -> stages.1.0 crosses resolutions
CNN_LAYERS = ["stem", "stages.0.0", "stages.0.1", "stages.1.0", "stages.1.1", "stages.1.2"]
VIT_LAYERS = ["embed", "blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]
VIT_KINDS = ["stem", "msa", "mlp", "msa", "mlp"]


def _kinds(family: str) -> list[str]:
    if family == "vit":
        return VIT_KINDS
    last = "msa" if family == "alternet" else "conv"
    return ["stem", "conv", "conv", "conv", "conv", last]


def _layers(family: str) -> list[str]:
    return VIT_LAYERS if family == "vit" else CNN_LAYERS


def make_seed_run(root, family: str, seed: int, rng: np.random.Generator, *, flip: bool = False):
    """A run of `family` trained with `seed`: config, metrics and one record of each analysis, with
    numbers drawn around the paper's pattern (`flip`: the opposite Fourier pattern)."""
    model = {"resnet": "resnet_cifar_micro", "alternet": "alternet_cifar_micro", "vit": "vit_cifar_micro"}[
        family
    ]
    run = root / f"cpu_{family}_s{seed}" / "version_0"
    run.mkdir(parents=True)
    layout = {"resnet": "[CC, CCC]", "alternet": "[CC, CCM]"}.get(family)
    kwargs = f"\n  model_kwargs:\n    layout: {layout}" if layout else ""
    names = ["hessian.HessianCallback", "fourier.FourierCallback", "lesion.LesionCallback"]
    analyses = "".join(f"\n  - class_path: alternet_pl.callbacks.{n}" for n in names)
    (run / "config.yaml").write_text(
        f"experiment: cpu_{family}_s{seed}\nseed_everything: {seed}\nmodel:\n  model: {model}{kwargs}\n"
        f"analyses:{analyses}\n"
    )
    acc = {"resnet": 0.6, "vit": 0.5, "alternet": 0.7}[family] + 0.02 * rng.standard_normal()
    (run / "metrics.csv").write_text(f"epoch,step,val/acc1\n0,9,{acc - 0.1}\n1,19,{acc}\n")
    out = run / "analysis"
    layers, kinds = _layers(family), _kinds(family)
    hf = np.cumsum([0.0] + [(-0.3 if k == "msa" else 0.2) * (-1 if flip else 1) for k in kinds[1:]])
    hf = hf + 0.01 * rng.standard_normal(len(hf))
    var = np.exp(np.cumsum([0.0] + [(-0.4 if k == "msa" else 0.3) for k in kinds[1:]]))
    depth = list(np.linspace(0, 1, len(layers)))
    common = dict(layers=layers, kinds=kinds, depth=depth)
    FourierRecord(**common, hf=list(hf), curves=[[0.0, h] for h in hf]).to_files(out / "fourier", STEM)
    VarianceRecord(**common, variance=list(var)).to_files(out / "variance", STEM)
    scale = {"resnet": 50.0, "vit": 5.0, "alternet": 20.0}[family]
    spec = np.stack(
        [-rng.uniform(0, 2, 4) * (3 if family == "vit" else 0.1), scale * rng.uniform(1, 2, 4)], 1
    )
    HessianRecord(
        eigenvalues=np.array([spec.max()]),
        residuals=np.zeros(2),
        top_eig=float(spec.max()),
        min_eig=float(spec.min()),
        converged=True,
        num_params=10,
        num_samples=32,
        num_hvps=8,
        spectrum=spec,
    ).to_files(out / "hessian", STEM)
    coords = np.linspace(-1, 1, 5)
    loss = 0.5 + scale * rng.uniform(0.8, 1.2) * (coords[:, None] ** 2 + coords[None, :] ** 2)
    edge = float(np.mean(np.concatenate([loss[0], loss[-1], loss[1:-1, 0], loss[1:-1, -1]])) - loss[2, 2])
    LandscapeRecord(
        coords=coords,
        loss=loss,
        nll=loss,
        acc=np.ones_like(loss),
        center_loss=float(loss[2, 2]),
        center_acc=1.0,
        edge_increase=edge,
        max_increase=float(loss.max() - loss[2, 2]),
        num_samples=64,
    ).to_files(out / "landscape", STEM)
    high = {"resnet": -0.3, "vit": -0.05, "alternet": -0.1}[family] + 0.01 * rng.standard_normal()
    delta = [-0.02, -0.05, high]
    FreqNoiseRecord(
        freqs=[0.1, 0.5, 0.9], eps=0.5, width=0.2, clean_acc=acc, acc=[acc + d for d in delta], delta=delta
    ).to_files(out / "freq_noise", STEM)
    drop = [0.0, 0.2, 0.01, 0.3, 0.02, 0.05 if family != "alternet" else 0.08][: len(layers)]
    LesionRecord(**common, clean_acc=acc, acc=[acc - d for d in drop], drop=drop).to_files(
        out / "lesion", STEM
    )
    err = {"resnet": 0.5, "vit": 0.45, "alternet": 0.4}[family] + 0.01 * rng.standard_normal()
    CorruptionRecord(
        root="x",
        corruptions=["noise"],
        severities=[1],
        clean={"acc": acc},
        metrics={"noise": {"1": {"acc": 1 - err}}},
        errors={"noise": [err]},
        acc=np.array([[1 - err]]),
        mean_corruption_error=err,
        mean_acc=1 - err,
        mean_nll=1.0,
        mean_ece=0.1,
    ).to_files(out / "corruption", STEM)
    return run


@pytest.fixture
def seed_runs(tmp_path):
    rng = np.random.default_rng(0)
    return [make_seed_run(tmp_path, f, s, rng) for f in ("resnet", "vit", "alternet") for s in (0, 1, 2)]


def _by_key(runs):
    return {f.key: f for f in findings([load_run(p) for p in runs])}


def _json(run, analysis):
    return json.loads((run / "analysis" / analysis / f"{STEM}.json").read_text())


def _seed_of(path) -> int:
    return int(path.parent.name.rsplit("_s", 1)[1])


def test_fourier_and_variance_statistics_match_a_second_computation(seed_runs):
    found = _by_key(seed_runs)
    for run in seed_runs:
        family = run.parent.name.split("_")[1]
        doc = _json(run, "fourier")
        stage = [n.split(".")[1] if n.startswith("stages.") else n for n in doc["layers"]]
        for kind, sign in (("msa", -1), ("conv", 1)):
            key = f"fourier_{kind}_{family}"
            if (family, kind) in (("vit", "conv"), ("resnet", "msa")):
                assert key not in found
                continue
            # second way: every layer of `kind` after a body layer (not the stem) of its own stage/tokens
            picks = [
                doc["hf"][i] - doc["hf"][i - 1]
                for i in range(2, len(doc["layers"]))
                if doc["kinds"][i] == kind
                and (stage[i] == stage[i - 1] or family == "vit")
                and doc["kinds"][i - 1] != "stem"
            ]
            assert found[key].values[_seed_of(run)] == pytest.approx(sign * np.mean(picks))
        vdoc = _json(run, "variance")
        if family != "resnet":
            logs = np.log(vdoc["variance"])
            picks = [logs[i] - logs[i - 1] for i in range(2, len(logs)) if vdoc["kinds"][i] == "msa"]
            assert found[f"variance_msa_{family}"].values[_seed_of(run)] == pytest.approx(-np.mean(picks))


def test_layer_pairs_leave_out_the_stem_and_resolution_changes():
    changes, stem = layer_pair_changes(
        CNN_LAYERS, _kinds("resnet"), [0.0, 5.0, 6.0, 10.0, 12.0, 15.0], "conv"
    )
    assert stem == 5.0
    assert changes == [1.0, 2.0, 3.0]  # stages.0.0->0.1, 1.0->1.1, 1.1->1.2; 0.1->1.0 crosses resolutions
    groups = pair_changes_by_resolution(
        CNN_LAYERS, _kinds("resnet"), [0.0, 5.0, 6.0, 10.0, 12.0, 15.0], "conv"
    )
    assert groups == {"0": [1.0], "1": [2.0, 3.0]}


def test_a_cnn_finding_that_does_not_show_says_where_along_the_network(tmp_path):
    """The reason of a Conv Fourier finding that does not reproduce gives each stage's mean oriented
    change over seeds and pairs, recomputed here from the fourier.json files; one that reproduces has
    no reason."""
    rng = np.random.default_rng(1)
    flipped = [make_seed_run(tmp_path, "resnet", s, rng, flip=True) for s in (0, 1, 2)]
    per_stage = {}
    for run in flipped:
        doc = _json(run, "fourier")
        for i in range(2, len(doc["layers"])):
            a, b = doc["layers"][i - 1].split("."), doc["layers"][i].split(".")
            if doc["kinds"][i] == "conv" and a[0] == b[0] == "stages" and a[1] == b[1]:
                per_stage.setdefault(b[1], []).append(doc["hf"][i] - doc["hf"][i - 1])
    finding = _by_key(flipped)["fourier_conv_resnet"]
    assert finding.verdict == "does not reproduce"
    assert sorted(per_stage) == ["0", "1"]
    for stage, changes in per_stage.items():
        assert f"stage {stage} {_fmt(float(np.mean(changes)))} ({len(changes)} pairs)" in finding.why
    ok = [make_seed_run(tmp_path / "ok", "resnet", s, rng) for s in (0, 1)]
    assert _by_key(ok)["fourier_conv_resnet"].why == ""


def test_paired_statistics_match_the_files(seed_runs):
    found = _by_key(seed_runs)
    runs = {(p.parent.name.split("_")[1], _seed_of(p)): p for p in seed_runs}
    for seed in (0, 1, 2):
        res, vit, alt = (runs[(f, seed)] for f in ("resnet", "vit", "alternet"))
        noise = {f: _json(r, "freq_noise")["delta"][-1] for f, r in (("resnet", res), ("vit", vit))}
        assert found["freq_noise_high_vit_vs_resnet"].values[seed] == pytest.approx(
            100 * (noise["vit"] - noise["resnet"])
        )
        err = {f: _json(r, "corruption")["mean_corruption_error"] for f, r in (("resnet", res), ("alt", alt))}
        assert found["corruption_alternet_vs_resnet"].values[seed] == pytest.approx(
            100 * (err["resnet"] - err["alt"])
        )
        edges = {f: _json(r, "landscape")["edge_increase"] for f, r in (("resnet", res), ("vit", vit))}
        assert found["landscape_resnet_vs_vit"].values[seed] == pytest.approx(
            np.log10(edges["resnet"] / edges["vit"])
        )
        spec = {
            f: np.load(r / "analysis/hessian" / f"{STEM}.npz")["spectrum"]
            for f, r in (("r", res), ("v", vit))
        }
        tops = {f: np.median(s.max(axis=1)) for f, s in spec.items()}
        assert found["hessian_top_resnet_vs_vit"].values[seed] == pytest.approx(
            np.log10(tops["r"] / tops["v"])
        )
        share = np.mean([row.min() < -0.01 * abs(row.max()) for row in spec["v"]])
        assert found["hessian_negative_vit"].values[seed] == pytest.approx(share)
        acc = {
            f: float(r.joinpath("metrics.csv").read_text().split()[-1].split(",")[-1])
            for f, r in runs.items()
        }
        assert found["accuracy_alternet_vs_resnet"].values[seed] == pytest.approx(
            100 * (acc[("alternet", seed)] - acc[("resnet", seed)])
        )
        lesion = _json(alt, "lesion")
        by_name = dict(zip(lesion["layers"], lesion["drop"]))
        expected = 100 * (by_name["stages.1.2"] - np.mean([by_name["stages.0.1"], by_name["stages.1.1"]]))
        assert found["lesion_msa_vs_conv_alternet"].values[seed] == pytest.approx(expected)


def test_pattern_as_in_the_paper_reproduces_with_mean_and_stderr(seed_runs):
    found = _by_key(seed_runs)
    for key in (
        "fourier_msa_alternet",
        "fourier_conv_resnet",
        "variance_msa_vit",
        "lesion_msa_vs_conv_alternet",
    ):
        f = found[key]
        assert f.verdict == "reproduces" and f.why == "", key
        vals = np.array(list(f.values.values()))
        assert f.mean == pytest.approx(vals.mean())
        assert f.stderr == pytest.approx(vals.std(ddof=1) / np.sqrt(3))


def test_changing_a_record_changes_the_verdict(seed_runs, tmp_path):
    before = _by_key(seed_runs)["fourier_msa_alternet"]
    assert before.verdict == "reproduces"
    # one seed's AlterNet gets the opposite Fourier pattern: the seeds disagree -> cannot tell
    alt1 = next(p for p in seed_runs if p.parent.name == "cpu_alternet_s1")
    doc = _json(alt1, "fourier")
    i = doc["kinds"].index("msa")
    hf = list(doc["hf"])
    hf[i] = hf[i - 1] + 0.5
    FourierRecord(
        layers=doc["layers"], kinds=doc["kinds"], depth=doc["depth"], hf=hf, curves=[[0.0, h] for h in hf]
    ).to_files(alt1 / "analysis" / "fourier", STEM)
    after = _by_key(seed_runs)["fourier_msa_alternet"]
    assert after.verdict == "cannot tell"
    assert "in 2 of 3 seeds" in after.why and "seed 1: -0.5" in after.why
    # every seed flipped -> does not reproduce, with the numbers in the reason
    rng = np.random.default_rng(1)
    flipped = [make_seed_run(tmp_path / "flip", "alternet", s, rng, flip=True) for s in (0, 1, 2)]
    result = _by_key(flipped)["fourier_msa_alternet"]
    assert result.verdict == "does not reproduce"
    assert result.why.startswith("the statistic is -0.") and "0 of 3 seeds" in result.why


def test_verdict_rule():
    assert verdict_of([0.1, 0.2, 0.3]) == "reproduces"
    assert verdict_of([-0.1, 0.0, -0.3]) == "does not reproduce"
    assert verdict_of([0.1, -0.2, 0.3]) == "cannot tell"
    assert verdict_of([0.5]) == "cannot tell"  # one seed says nothing about the spread
    assert verdict_of([0.5, float("nan")]) == "cannot tell"
    assert verdict_of([]) == "cannot tell"


@pytest.mark.slow
def test_report_writes_findings_json_markdown_and_html(seed_runs, tmp_path):
    out = tmp_path / "figures"
    rep = report.build_report(seed_runs, out)
    doc = json.loads((out / "findings.json").read_text())
    assert {f["key"] for f in doc["findings"]} == {f.key for f in rep.findings}
    assert "reproduces" in doc["rule"]
    by_key = {f["key"]: f for f in doc["findings"]}
    assert by_key["fourier_msa_alternet"]["values"].keys() == {"0", "1", "2"}
    md = (out / "report.md").read_text()
    assert "## Findings" in md and "fourier_msa_alternet" in md
    page = (out / "index.html").read_text()
    table = page.split("class='findings'", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == len(doc["findings"]) + 1 and "fourier_msa_alternet" in table
    assert (out / "fig1a_landscape_spread.png").is_file()


def test_accuracy_findings_that_do_not_show_name_the_accuracy_range(seed_runs, tmp_path):
    """The reason an accuracy-based finding does not show starts from the runs' accuracies: their
    range, read here straight from metrics.csv; a reproducing finding carries no reason."""
    import csv

    from alternet_pl.plots.claims import accuracy_spread

    best = {}
    for run in seed_runs:
        with open(run / "metrics.csv") as fh:
            best[run] = max(float(row["val/acc1"]) for row in csv.DictReader(fh))
    lo, hi = min(best.values()), max(best.values())
    expected = f"every run's best validation top-1 {lo:.1%}-{hi:.1%} ({100 * (hi - lo):.1f} points)"
    assert accuracy_spread([load_run(p) for p in seed_runs]) == expected
    found = _by_key(seed_runs)
    assert found["accuracy_alternet_vs_resnet"].verdict == "reproduces"
    assert found["accuracy_alternet_vs_resnet"].why == ""
    # AlterNet made the least accurate in every seed: does not reproduce, and says the range
    for run in seed_runs:
        if "alternet" in run.parent.name:
            (run / "metrics.csv").write_text("epoch,step,val/acc1\n0,9,0.01\n1,19,0.02\n")
    result = _by_key(seed_runs)["accuracy_alternet_vs_resnet"]
    assert result.verdict == "does not reproduce"
    top = max(a for run, a in best.items() if "alternet" not in run.parent.name)
    assert result.why.endswith(
        f"; every run's best validation top-1 2.0%-{top:.1%} ({100 * (top - 0.02):.1f} points)."
    )
