"""The paper's claims, one function each: `(runs) -> [Finding]` computed from the runs' records.

How each statistic is oriented and judged: `alternet_pl.plots.findings`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from alternet_pl.plots.findings import (
    Finding,
    _fmt,
    by_family,
    layer_pair_changes,
    make_finding,
    pair_changes_by_resolution,
    run_seed,
)
from alternet_pl.plots.rundata import Run

__all__ = ["CLAIMS", "accuracy_spread"]


def _pairs_finding(
    runs, analysis: str, family: str, kind: str, sign: int, figure: str, claim: str
) -> Finding:
    """Mean change over same-resolution `kind` pairs of one family, oriented by `sign`; its reason,
    when it does not show, is where along the network it does and does not (`_by_stage`)."""
    field_name = {"fourier": "hf", "variance": "variance"}[analysis]
    values, stems, counts, by_stage = {}, [], [], {}
    for seed, run in sorted(by_family(runs, analysis).get(family, {}).items()):
        rec = run.record(analysis)
        raw = np.asarray(getattr(rec, field_name), float)
        series = np.log(raw) if analysis == "variance" else raw
        changes, stem = layer_pair_changes(rec.layers, rec.kinds, series, kind)
        if changes:
            values[seed] = sign * float(np.mean(changes))
            counts.append(len(changes))
        if stem is not None:
            stems.append(stem)
        for key, group in pair_changes_by_resolution(rec.layers, rec.kinds, series, kind).items():
            by_stage.setdefault(key, []).extend(sign * c for c in group)
    what = "Δ high-frequency log amplitude" if analysis == "fourier" else "Δ log variance"
    name = {"resnet": "ResNet", "vit": "ViT", "alternet": "AlterNet"}[family]
    statistic = (
        f"{'minus ' if sign < 0 else ''}mean {what} over {name}'s {kind.upper()} blocks, each against the "
        f"layer before it at the same resolution ({counts[0] if counts else 0} pairs per seed; the stem "
        "pair apart)"
    )
    detail = f"stem/embedding pair: {', '.join(_fmt(s) for s in stems) or '-'} (not counted)"
    key = f"{analysis}_{kind}_{family}"
    return make_finding(key, figure, claim, statistic, values, detail, _by_stage(by_stage))


def _by_stage(by_stage: dict[str, list[float]]) -> str:
    """The per-stage sentence of a CNN's pair finding, for example "by stage (oriented as the statistic,
    mean over seeds and pairs): stage 1 +0.12 (3 pairs), ..."; "" for one resolution (ViT)."""
    if len(by_stage) < 2:
        return ""
    parts = [f"stage {k} {_fmt(float(np.mean(v)))} ({len(v)} pairs)" for k, v in by_stage.items()]
    return "by stage (oriented as the statistic, mean over seeds and pairs): " + ", ".join(parts)


def _fourier(runs) -> list[Finding]:
    low = "MSAs are low-pass filters: the high-frequency log amplitude falls across an MSA block (Fig. 2a/8)."
    high = (
        "Convs are high-pass filters: the high-frequency log amplitude rises across a Conv block (Fig. 2a/8)."
    )
    fig = "fig2a_fourier_by_depth"
    return [
        _pairs_finding(runs, "fourier", "vit", "msa", -1, fig, low),
        _pairs_finding(runs, "fourier", "alternet", "msa", -1, fig, low),
        _pairs_finding(runs, "fourier", "resnet", "conv", +1, fig, high),
        _pairs_finding(runs, "fourier", "alternet", "conv", +1, fig, high),
    ]


def _variance(runs) -> list[Finding]:
    low = "MSAs reduce the feature-map variance (Fig. 9)."
    high = "Convs increase the feature-map variance (Fig. 9)."
    fig = "fig9_variance_by_depth"
    return [
        _pairs_finding(runs, "variance", "vit", "msa", -1, fig, low),
        _pairs_finding(runs, "variance", "alternet", "msa", -1, fig, low),
        _pairs_finding(runs, "variance", "resnet", "conv", +1, fig, high),
        _pairs_finding(runs, "variance", "alternet", "conv", +1, fig, high),
    ]


def _paired(runs, analysis: str | None, first: str, second: str, value: Callable[[Run], float | None]):
    """{seed: (value of `first`'s run, value of `second`'s run)} over seeds both families have."""
    fams = by_family(runs, analysis)
    out = {}
    for seed in sorted(set(fams.get(first, {})) & set(fams.get(second, {}))):
        a, b = value(fams[first][seed]), value(fams[second][seed])
        if a is not None and b is not None:
            out[seed] = (float(a), float(b))
    return out


def _seedwise(pairs, combine: Callable[[float, float], float], pair: str) -> tuple[dict[int, float], str]:
    """{seed: combine(a, b)} of `_paired` values, and the detail "seed s: <pair with a and b>; ..."
    (`pair` a format string of ``a`` and ``b``)."""
    values = {s: combine(a, b) for s, (a, b) in pairs.items()}
    return values, "; ".join(f"seed {s}: " + pair.format(a=a, b=b) for s, (a, b) in pairs.items())


def accuracy_spread(runs) -> str:
    """One sentence from the numbers: the range of every run's best validation top-1 (and top-5), the
    first thing to read when an accuracy-based finding does not show (all runs alike, or one cue
    learnt); "" when no run logged validation accuracy."""
    parts = []
    for key, name in (("val/acc1", "top-1"), ("val/acc5", "top-5")):
        best = [a for run in runs if (a := run.best_metric(key, "max")) is not None]
        if best:
            lo, hi = min(best), max(best)
            parts.append(f"{name} {lo:.1%}-{hi:.1%} ({100 * (hi - lo):.1f} points)")
    return f"every run's best validation {' and '.join(parts)}" if parts else ""


def _accuracy(runs) -> list[Finding]:
    out = []
    for other, name in (("resnet", "ResNet"), ("vit", "ViT")):
        pairs = _paired(runs, None, "alternet", other, lambda r: r.best_metric("val/acc1", "max"))
        values, detail = _seedwise(pairs, lambda a, b: 100 * (a - b), f"AlterNet {{a:.1%}}, {name} {{b:.1%}}")
        out.append(
            make_finding(
                f"accuracy_alternet_vs_{other}",
                "fig_training_curves",
                f"AlterNet is more accurate than {name} (Table / Fig. 10).",
                f"AlterNet's best validation accuracy minus {name}'s, in points, same seed",
                values,
                detail,
                accuracy_spread(runs),
            )
        )
    return out


def _log_ratio(a: float, b: float) -> float:
    """log10(a / b), NaN unless both are positive."""
    return math.log10(a / b) if a > 0 and b > 0 else math.nan


def _spectrum(run: Run) -> np.ndarray | None:
    rec = run.record("hessian")
    if rec is None or rec.spectrum is None:
        return None
    return np.asarray(rec.spectrum, float).reshape(len(rec.spectrum), -1)


def _negative_share(spec: np.ndarray) -> float:
    """Share of batches whose smallest eigenvalue is below -1% of that batch's largest."""
    lo, hi = np.nanmin(spec, axis=1), np.nanmax(spec, axis=1)
    return float(np.mean(lo < -0.01 * np.abs(hi)))


def _hessian(runs) -> list[Finding]:
    fig = "fig1c_hessian_spectra"
    fams = by_family(runs, "hessian")
    shares = {
        f: {s: _negative_share(sp) for s, r in seeds.items() if (sp := _spectrum(r)) is not None}
        for f, seeds in fams.items()
    }
    detail = "; ".join(
        f"{f}: negative in {', '.join(f'{100 * v:.0f}%' for v in d.values())} of batches"
        for f, d in shares.items()
    )
    negative = make_finding(
        "hessian_negative_vit",
        fig,
        "ViT's loss is non-convex on small data: its per-batch Hessian spectra include negative "
        "eigenvalues (Fig. 1c).",
        "share of ViT's training mini-batches whose smallest Hessian eigenvalue is below -1% of its largest",
        shares.get("vit", {}),
        detail,
    )
    pairs = _paired(runs, "hessian", "resnet", "vit", lambda r: _top_median(r))
    values, detail = _seedwise(pairs, _log_ratio, "ResNet {a:.3g}, ViT {b:.3g}")
    top = make_finding(
        "hessian_top_resnet_vs_vit",
        fig,
        "MSAs flatten the loss: ViT's Hessian eigenvalues are far smaller than ResNet's (Fig. 1c).",
        "log10 of ResNet's median per-batch top eigenvalue over ViT's, same seed",
        values,
        detail,
    )
    return [negative, top]


def _top_median(run: Run) -> float | None:
    spec = _spectrum(run)
    return None if spec is None else float(np.median(np.nanmax(spec, axis=1)))


def _edge(run: Run) -> float | None:
    rec = run.record("landscape")
    return None if rec is None or rec.dims != 2 else float(rec.edge_increase)


def _landscape(runs) -> list[Finding]:
    out = []
    for other, name, norm in (("vit", "ViT", "LayerNorm"), ("alternet", "AlterNet", "BatchNorm + MSA")):
        pairs = _paired(runs, "landscape", "resnet", other, _edge)
        values, detail = _seedwise(pairs, _log_ratio, f"ResNet {{a:.3g}}, {name} {{b:.3g}}")
        why = ""
        if pairs:
            res = np.mean([a for a, _ in pairs.values()])
            oth = np.mean([b for _, b in pairs.values()])
            why = (
                f"ResNet (eval-mode BatchNorm, which cannot renormalise perturbed weights) rises by "
                f"{res:.3g} at the grid's edge and {name} ({norm}) by {oth:.3g}"
            )
        out.append(
            make_finding(
                f"landscape_resnet_vs_{other}",
                "fig1a_loss_landscapes",
                f"MSAs flatten the loss landscape: {name}'s is flatter than ResNet's (Fig. 1a).",
                f"log10 of ResNet's loss rise from the centre to the edge of the filter-normalised grid over "
                f"{name}'s (each seed its own random directions)",
                values,
                detail,
                why,
            )
        )
    return out


def _band_mean(rec, lo: float, hi: float) -> float:
    sel = [d for f, d in zip(rec.freqs, rec.delta) if lo - 1e-9 <= f <= hi + 1e-9]
    return float(np.mean(sel)) if sel else math.nan


def _freq_noise(runs) -> list[Finding]:
    def high(run):
        return 100 * _band_mean(run.record("freq_noise"), 0.7, 1.0)

    pairs = _paired(runs, "freq_noise", "vit", "resnet", high)
    values, detail = _seedwise(pairs, lambda a, b: a - b, "ViT {a:+.1f}, ResNet {b:+.1f} points")
    return [
        make_finding(
            "freq_noise_high_vit_vs_resnet",
            "fig2b_freq_noise",
            "ViT is robust to high-frequency noise, ResNet is not (Fig. 2b).",
            "ViT's accuracy change under noise at 0.7-0.9 pi minus ResNet's, in points, same seed",
            values,
            detail,
        )
    ]


def _lesion(runs) -> list[Finding]:
    values, parts = {}, []
    for seed, run in sorted(by_family(runs, "lesion").get("alternet", {}).items()):
        rec = run.record("lesion")
        msa = [100 * d for n, k, d in zip(rec.layers, rec.kinds, rec.drop) if k == "msa"]
        conv = [
            100 * d
            for n, k, d in zip(rec.layers, rec.kinds, rec.drop)
            if k == "conv" and not n.endswith(".0")
        ]
        if msa and conv:
            values[seed] = float(np.mean(msa) - np.mean(conv))
            parts.append(f"seed {seed}: MSA {np.mean(msa):.1f}, Conv {np.mean(conv):.1f} points")
    return [
        make_finding(
            "lesion_msa_vs_conv_alternet",
            "fig12_lesion_by_depth",
            "Removing an MSA block at the end of a stage costs more accuracy than removing a Conv block "
            "(Fig. 12).",
            "AlterNet's mean accuracy drop (points) when an MSA block is removed minus that of its Conv "
            "blocks with an identity shortcut (the stage-first blocks, whose lesion leaves a strided "
            "projection, apart)",
            values,
            "; ".join(parts),
            accuracy_spread(runs),
        )
    ]


def _corruption(runs) -> list[Finding]:
    def err(run):
        return 100 * run.record("corruption").mean_corruption_error

    pairs = _paired(runs, "corruption", "resnet", "alternet", err)
    values, detail = _seedwise(pairs, lambda a, b: a - b, "ResNet {a:.1f}%, AlterNet {b:.1f}%")
    return [
        make_finding(
            "corruption_alternet_vs_resnet",
            "fig_corruption",
            "AlterNet is more robust to corruptions than ResNet (Fig. 10 / corruption table).",
            "ResNet's mean corruption error minus AlterNet's, in points, same seed",
            values,
            detail,
        )
    ]


def _buildup(runs) -> list[Finding]:
    per_seed: dict[int, dict[int, float]] = {}
    for run in runs:
        n, acc = run.num_msas, run.best_metric("val/acc1", "max")
        if n is not None and acc is not None and run.family in ("resnet", "alter"):
            per_seed.setdefault(run_seed(run), {})[n] = 100 * acc
    values = {}
    for seed, pts in sorted(per_seed.items()):
        if len(pts) >= 2:
            x, y = np.array(sorted(pts)), np.array([pts[k] for k in sorted(pts)])
            values[seed] = float(np.polyfit(x, y, 1)[0])
    detail = "; ".join(
        f"seed {s}: " + ", ".join(f"{k} MSA {v:.1f}%" for k, v in sorted(p.items()))
        for s, p in sorted(per_seed.items())
    )
    return [
        make_finding(
            "buildup_slope",
            "fig11_buildup",
            "Replacing Conv blocks by MSAs from the end of the stages raises accuracy, up to AlterNet "
            "(Fig. 11).",
            "least-squares slope of best validation accuracy (points) against the number of MSA blocks, "
            "per seed",
            values,
            detail,
            accuracy_spread(runs),
        )
    ]


#: every claim, in report order
CLAIMS: tuple[Callable[[Sequence[Run]], list[Finding]], ...] = (
    _hessian,
    _landscape,
    _fourier,
    _variance,
    _freq_noise,
    _lesion,
    _corruption,
    _accuracy,
    _buildup,
)
