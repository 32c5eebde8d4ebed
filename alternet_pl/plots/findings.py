"""The report's verdicts as data: for each paper figure, the claim, our statistic and a verdict.

Every statistic is oriented so that a positive value is what the paper claims, computed per training
seed from the run directories' result records (never from a figure), and summarised as mean and
standard error over seeds. The verdict is a rule on the seeds, fixed before any result was seen:
"reproduces" when every seed (at least two) is positive, "does not reproduce" when every seed is
negative or zero, else "cannot tell" (some seeds either way, one seed only, or no data). Where a finding
does not show, `why` is one sentence built from the numbers.

`findings(runs)` returns the list; `write_findings(findings, path)` writes `findings.json`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from alternet_pl.plots.rundata import Run

__all__ = [
    "Finding",
    "Verdict",
    "make_finding",
    "by_family",
    "findings",
    "findings_html",
    "findings_markdown",
    "layer_pair_changes",
    "pair_changes_by_resolution",
    "run_seed",
    "verdict_of",
    "write_findings",
]

Verdict = Literal["reproduces", "does not reproduce", "cannot tell"]


@dataclass(frozen=True)
class Finding:
    """One claim of the paper checked on these runs.

    `values`: the statistic per seed (seed -> value; positive = the paper's claim); `mean`/`stderr`
    over seeds (stderr None with one seed); `detail`: the numbers behind it, in words; `why`: one
    sentence from the numbers when the verdict is not "reproduces" (empty otherwise)."""

    key: str
    figure: str
    claim: str
    statistic: str
    values: dict[int, float]
    verdict: Verdict
    detail: str = ""
    why: str = ""
    mean: float | None = None
    stderr: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["values"] = {str(k): v for k, v in self.values.items()}
        return out


def verdict_of(values: Sequence[float]) -> Verdict:
    """The fixed rule: all seeds (two or more) positive -> reproduces; all <= 0 -> does not reproduce;
    else (seeds disagree, one seed, a non-finite value) cannot tell."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if len(vals) < 2 or len(vals) < len(values):
        return "cannot tell"
    if all(v > 0 for v in vals):
        return "reproduces"
    if all(v <= 0 for v in vals):
        return "does not reproduce"
    return "cannot tell"


def _summary(values: dict[int, float]) -> tuple[float | None, float | None]:
    vals = np.array([v for v in values.values() if math.isfinite(v)], float)
    if vals.size == 0:
        return None, None
    stderr = float(vals.std(ddof=1) / math.sqrt(vals.size)) if vals.size > 1 else None
    return float(vals.mean()), stderr


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:+.{digits}g}"


def make_finding(
    key: str,
    figure: str,
    claim: str,
    statistic: str,
    values: dict[int, float],
    detail: str = "",
    why: str = "",
) -> Finding:
    """A finding with its verdict, mean and stderr computed from `values`; `why` is kept only when
    the finding does not reproduce, and then always says how many seeds agree."""
    verdict = verdict_of(list(values.values()))
    mean, stderr = _summary(values)
    if verdict != "reproduces":
        agree = sum(1 for v in values.values() if math.isfinite(v) and v > 0)
        seeds = ", ".join(f"seed {s}: {_fmt(v)}" for s, v in sorted(values.items())) or "no run has the data"
        head = (
            (
                f"the statistic is {_fmt(mean)} ± {stderr:.2g}"
                if stderr is not None
                else f"the statistic is {_fmt(mean)}"
            )
            if mean is not None
            else "no seed has the data"
        )
        why = (
            f"{head}, on the paper's side in {agree} of {len(values)} seeds ({seeds})"
            + (f"; {why}" if why else "")
            + "."
        )
    else:
        why = ""
    return Finding(key, figure, claim, statistic, dict(values), verdict, detail, why, mean, stderr)


# ---- reading runs ------------------------------------------------------------------------------------
def run_seed(run: Run) -> int:
    """The run's training seed (`seed_everything` in config.yaml; 0 when absent)."""
    seed = run.config.get("seed_everything")
    return int(seed) if isinstance(seed, int | float) and not isinstance(seed, bool) else 0


#: `Run.family` (the plots' MODEL_STYLE key) -> the name findings use
_FAMILIES = {"resnet": "resnet", "vit": "vit", "alter": "alternet"}


def by_family(runs: Sequence[Run], analysis: str | None = None) -> dict[str, dict[int, Run]]:
    """{family: {seed: run}} of the compared models ("resnet", "vit", "alternet"). With `analysis`,
    only runs that have its result; without, runs with analyses configured are preferred (the build-up
    runs train without analyses), and the last run of a (family, seed) wins."""
    out: dict[str, dict[int, Run]] = {}
    for run in runs:
        if analysis is not None and not run.has(analysis):
            continue
        family = _FAMILIES.get(run.family)
        if family is None:
            continue
        seeds = out.setdefault(family, {})
        seed = run_seed(run)
        if (
            seed in seeds
            and analysis is None
            and seeds[seed].configured_analyses
            and not run.configured_analyses
        ):
            continue
        seeds[seed] = run
    return out


def _resolution_key(name: str) -> str:
    """Which feature-map resolution a layer has: the stage of "stages.i.j", else one for all (ViT blocks)."""
    parts = name.split(".")
    return parts[1] if parts[0] == "stages" and len(parts) > 2 else "tokens"


def layer_pair_changes(
    layers: Sequence[str], kinds: Sequence[str], values: Sequence[float], kind: str
) -> tuple[list[float], float | None]:
    """Changes values[i] - values[i - 1] across consecutive layers whose second layer is of `kind`,
    both of one resolution (same stage; ViT blocks all are), leaving out the pair that starts at the
    stem or embedding; and that first pair's change apart (None when the first layer is no stem)."""
    pairs, stem_change = _same_resolution_pairs(layers, kinds, values, kind)
    return [change for _, change in pairs], stem_change


def pair_changes_by_resolution(
    layers: Sequence[str], kinds: Sequence[str], values: Sequence[float], kind: str
) -> dict[str, list[float]]:
    """`layer_pair_changes` grouped by resolution ("0", "1", ... the stage; "tokens" for ViT blocks),
    in depth order: where along the network a block kind acts as the paper says and where not."""
    groups: dict[str, list[float]] = {}
    for key, change in _same_resolution_pairs(layers, kinds, values, kind)[0]:
        groups.setdefault(key, []).append(change)
    return groups


def _same_resolution_pairs(
    layers: Sequence[str], kinds: Sequence[str], values: Sequence[float], kind: str
) -> tuple[list[tuple[str, float]], float | None]:
    """[(resolution key, change)] of `layer_pair_changes`, and the stem pair's change apart."""
    pairs, stem_change = [], None
    body = {"conv", "msa", "mlp"}
    for i in range(1, len(layers)):
        if kinds[i - 1] not in body:
            if i == 1 and kinds[i] in body:
                stem_change = float(values[i] - values[i - 1])
            continue
        key = _resolution_key(layers[i])
        if kinds[i] == kind and key == _resolution_key(layers[i - 1]):
            pairs.append((key, float(values[i] - values[i - 1])))
    return pairs, stem_change


def findings(runs: Sequence[Run]) -> list[Finding]:
    """Every finding these runs have any data for (a claim no run has data for is left out)."""
    from alternet_pl.plots.claims import CLAIMS

    out = []
    for group in CLAIMS:
        out += [f for f in group(runs) if f.values]
    return out


def write_findings(items: Sequence[Finding], path: str | Path) -> Path:
    """`findings.json`: {"rule": the verdict rule, "findings": [...]}; returns the path."""
    from alternet_pl.analysis.files import write_text

    doc = {
        "rule": _RULE,
        "findings": [f.to_dict() for f in items],
    }
    return write_text(Path(path), json.dumps(doc, indent=2, allow_nan=False, default=_json_default) + "\n")


def _json_default(obj):
    raise TypeError(f"not JSON serialisable: {obj!r}")


# ---- rendering -------------------------------------------------------------------------------------
_COLUMNS = ("finding", "paper", "ours (mean ± s.e. over seeds)", "per seed", "verdict", "why / detail")


def _rows(items: Sequence[Finding]) -> list[list[str]]:
    rows = []
    for f in items:
        ours = (
            "-" if f.mean is None else _fmt(f.mean) + (f" ± {f.stderr:.2g}" if f.stderr is not None else "")
        )
        seeds = ", ".join(f"{s}: {_fmt(v)}" for s, v in sorted(f.values.items()))
        note = f.why or f.detail
        rows.append([f"{f.key} ({f.figure})", f.claim, f"{ours} — {f.statistic}", seeds, f.verdict, note])
    return rows


def findings_markdown(items: Sequence[Finding]) -> str:
    """The findings as a markdown table (one row per finding)."""
    if not items:
        return "No run has the data of any finding.\n"
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in _rows(items)]
    counts = {
        v: sum(f.verdict == v for f in items) for v in ("reproduces", "does not reproduce", "cannot tell")
    }
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    return f"Verdicts: {summary}. Rule: {_RULE}\n\n" + "\n".join(lines) + "\n"


def findings_html(items: Sequence[Finding]) -> str:
    """The findings as an HTML table, verdicts coloured."""
    import html

    e = html.escape
    colour = {"reproduces": "#070", "does not reproduce": "#a00", "cannot tell": "#a60"}
    parts = ["<style>table.findings td{text-align:left;vertical-align:top}</style>"]
    parts += [
        f"<p>{e(_RULE)}</p><table class='findings'><tr>"
        + "".join(f"<th>{e(c)}</th>" for c in _COLUMNS)
        + "</tr>"
    ]
    for f, row in zip(items, _rows(items)):
        cells = [f"<td>{e(c)}</td>" for c in row]
        cells[4] = f"<td style='color:{colour[f.verdict]};font-weight:bold'>{e(f.verdict)}</td>"
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


_RULE = (
    "each statistic is oriented so that > 0 is the paper's claim; reproduces: every seed (at least two) > 0; "
    "does not reproduce: every seed <= 0; cannot tell: otherwise (seeds disagree, one seed, or no data)."
)
