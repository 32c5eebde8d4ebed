"""What reaches W&B besides Lightning's metrics: analysis arrays as tables (artifacts when large),
architecture tags, and the report's comparison run.

* `log_analysis_record(logger, name, record, npz_path, step)`: called by `AnalysisCallback._log`
  for every logger; each array field of the record becomes a `wandb.Table` under
  `<name>/table/<field>` (1-D: index, value; 2-D: one row per row), the per-layer values one table
  `<name>/table/layers` (layer, kind, depth, values); arrays past `MAX_TABLE_CELLS` go into the run as
  an artifact of the result's npz file instead.
* `architecture_tags(model_name)`: the tags a run gets (family and model name, e.g. ["vit",
  "vit_cifar_micro"]), so ResNet, ViT and AlterNet filter apart in one project.
* `log_report(report, out, project)`: `report --wandb`: the results table, every comparison figure
  and what it shows, and the missing analyses, in a W&B run of its own (job_type "report", group
  "comparison") in the same project. Offline unless an API key is configured.

A W&B failure is logged as a warning and never raised: training and the report go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from alternet_pl.loggers.offline import default_wandb_offline
from alternet_pl.plots import model_family

log = logging.getLogger(__name__)

__all__ = [
    "MAX_TABLE_CELLS",
    "architecture_tags",
    "array_table",
    "layer_table",
    "log_analysis_record",
    "record_tables",
    "log_report",
    "tag_architecture",
]

#: arrays with more cells than this are logged as an artifact (the npz file), not as a table
MAX_TABLE_CELLS = 20_000


def architecture_tags(model_name: str) -> list[str]:
    """["<family>", "<model name>"] (family from the shared palette: resnet, vit, alter, pit, swin)."""
    family = model_family(model_name)
    return [t for t in dict.fromkeys([family, model_name]) if t]


def tag_architecture(logger: Any, params: Mapping[str, Any]) -> None:
    """Add the architecture tags of the module hparams' `network.name` to a W&B logger's run."""
    network = params.get("network") if isinstance(params, Mapping) else None
    model = network.get("name") if isinstance(network, Mapping) else None
    if not isinstance(model, str) or not hasattr(logger, "experiment"):
        return
    try:
        run = logger.experiment
        run.tags = tuple(dict.fromkeys([*(run.tags or ()), *architecture_tags(model)]))
    except Exception as err:  # noqa: BLE001  (W&B must never kill a run)
        log.warning("W&B tags for %s not set: %s", model, err)


def array_table(name: str, array: Any) -> tuple[list[str], list[list[Any]]] | None:
    """(columns, rows) of a 0-, 1- or 2-D numeric array; None for other shapes or past MAX_TABLE_CELLS."""
    a = np.asarray(array)
    if a.dtype.kind not in "biuf" or a.ndim > 2 or a.size > MAX_TABLE_CELLS:
        return None
    a = a.astype(float)
    if a.ndim == 0:
        return [name], [[float(a)]]
    if a.ndim == 1:
        return ["index", name], [[i, float(v)] for i, v in enumerate(a)]
    return ["row", *[f"{name}[:, {j}]" for j in range(a.shape[1])]], [
        [i, *map(float, row)] for i, row in enumerate(a)
    ]


def layer_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]] | None:
    """(columns, rows) of the per-layer values of a summary with `layers`, `kinds`, `depth`: every
    numeric list of the same length becomes a column. None when the summary has no layers."""
    layers = summary.get("layers")
    if not isinstance(layers, list) or not layers:
        return None
    n = len(layers)
    cols = {
        key: value
        for key, value in summary.items()
        if key not in ("layers", "kinds")
        and isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, int | float) or v is None for v in value)
    }
    kinds = summary.get("kinds") if isinstance(summary.get("kinds"), list) else [""] * n
    rows = [[layers[i], kinds[i], *[cols[k][i] for k in cols]] for i in range(n)]
    return ["layer", "kind", *cols], rows


def record_tables(name: str, record: Any) -> tuple[dict[str, tuple[list, list]], list[str]]:
    """({table key: (columns, rows)}, names of arrays too large for a table) of an analysis record:
    one table per array field (`<name>/table/<field>`), and the per-layer values (`<name>/table/layers`)
    or else the numeric lists of equal length side by side (`<name>/table/values`)."""
    values = {f.name: getattr(record, f.name) for f in fields(record)}
    array_names = set(record.array_fields()) if hasattr(record, "array_fields") else set()
    tables: dict[str, tuple[list, list]] = {}
    too_large = []
    for key in sorted(array_names):
        if values[key] is None:
            continue
        table = array_table(key, values[key])
        if table is None:
            too_large.append(key)
        else:
            tables[f"{name}/table/{key}"] = table
    if (layers := layer_table(values)) is not None:
        tables[f"{name}/table/layers"] = layers
    else:  # numeric lists of one length side by side (e.g. freq_noise: freqs, acc, delta)
        lists = {k: v for k, v in values.items() if k not in array_names and _numeric_list(v)}
        if lists and len({len(v) for v in lists.values()}) == 1:
            columns = list(lists)
            tables[f"{name}/table/values"] = (columns, [list(row) for row in zip(*lists.values())])
    return tables, too_large


def _numeric_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


def log_analysis_record(logger: Any, name: str, record: Any, npz_path: str | Path | None, step: int) -> None:
    """Log an analysis record's arrays to a W&B logger (one with `log_table`; others are skipped) as
    tables, and its npz file as an artifact when an array is too large for a table. Never raises."""
    if not hasattr(logger, "log_table") or not hasattr(logger, "experiment"):
        return
    try:
        tables, too_large = record_tables(name, record)
        for key, (columns, rows) in tables.items():
            logger.log_table(key=key, columns=columns, data=rows, step=step)
        if too_large and npz_path is not None and Path(npz_path).is_file():
            import wandb

            artifact = wandb.Artifact(
                f"{name}-arrays",
                type="analysis-arrays",
                metadata={"analysis": name, "step": step, "arrays": too_large},
            )
            artifact.add_file(str(npz_path))
            logger.experiment.log_artifact(artifact)
    except Exception as err:  # noqa: BLE001  (W&B must never kill a run)
        log.warning("logging %s arrays to W&B failed: %s: %s", name, type(err).__name__, err)


def log_report(report: Any, out: str | Path, project: str = "alternet-pl", name: str | None = None) -> str:
    """Log a written `alternet_pl.report.Report` to a new W&B run (job_type "report", group
    "comparison", tagged with the runs' architectures): `report/results` table, one image per figure
    under `report/<figure>`, `report/findings` (figure, paper, these runs) and `report/missing`.
    Returns the run's URL, or its local directory offline; "" if W&B failed (a warning says why)."""
    default_wandb_offline()
    out = Path(out)
    try:
        import wandb

        tags = sorted({t for r in report.runs for t in architecture_tags(r.model)})
        run = wandb.init(
            project=project,
            job_type="report",
            group="comparison",
            name=name or f"report-{time.strftime('%Y%m%d-%H%M%S')}",
            dir=str(out),
            tags=tags,
            config={"runs": [str(r.path) for r in report.runs]},
            reinit="create_new",
        )
        try:
            payload: dict[str, Any] = {
                "report/results": wandb.Table(columns=report.header, data=report.rows),
                "report/findings": wandb.Table(
                    columns=["figure", "paper", "these runs"],
                    data=[[f.title, f.paper, f.observed] for f in report.figures],
                ),
                "report/missing": wandb.Table(
                    columns=["run", "analysis"],
                    data=[[label, line] for label, lines in report.missing.items() for line in lines],
                ),
            }
            for fig in report.figures:
                png = out / f"{fig.name}.png"
                if png.is_file():
                    payload[f"report/{fig.name}"] = wandb.Image(str(png), caption=fig.observed)
            run.log(payload)
            for row in report.rows:  # the table's numbers also as summary values per run
                for col, cell in zip(report.header[2:], row[2:]):
                    if cell != "-":
                        run.summary[f"{row[0]}/{col}"] = float(cell)
            where = run.url or str(Path(run.dir).parent)
        finally:
            run.finish()
        return where or ""
    except Exception as err:  # noqa: BLE001
        log.warning(
            "W&B report run failed (%s: %s); the files in %s are complete", type(err).__name__, err, out
        )
        return ""
