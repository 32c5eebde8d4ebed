"""`python -m alternet_pl.analyze --config RUN/config.yaml --ckpt_path CKPT --analysis NAME [NAME ...]`.

Runs the same analyses as the training callbacks, post hoc on a checkpoint, and writes the same
files (`<out_dir>/analysis/<name>/<stem>.json|npz|png`; `out_dir` defaults to the checkpoint's
run directory). Each analysis's options are flags `--<name>.<option>` (see `--help`); their defaults
come from the run config's `analyses:` entry for that analysis when it has one.

The paper authors' checkpoints: `--official PATH --data cifar100 --analysis NAME ...` (instead of
`--config` / `--ckpt_path`) loads PATH with `alternet_pl.models.load_official` (layout recognised from
its tensors; `--arch` overrides), wraps it in an `ImageClassifier` with the paper's recipe (so
augmented-data analyses see Mixup / CutMix as in training) and writes to `runs/official/<layout>/`
(`--out_dir` overrides) as a run would, with a `config.yaml` naming the model and data.
`--data` is cifar10, cifar100, imagenet, synthetic or a YAML file with a `data:` section (e.g.
configs/data/cifar100.yaml); `--data_root` sets its root. `--analyses_from FILE` takes the analyses'
defaults from a file's `analyses:` entries (e.g. configs/analysis/paper.yaml), as a run config would.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.cli import instantiate_class

from alternet_pl.callbacks import ANALYSES
from alternet_pl.errors import CommandFailed, InputError, run_command
from alternet_pl.models.official import OFFICIAL_LAYOUTS, load_official
from alternet_pl.runs import (
    analysis_dir,
    analysis_root_of_checkpoint,
    result_stem,
    write_config,
    write_error_record,
)
from alternet_pl.training import checkpoints
from alternet_pl.training.module import ImageClassifier

__all__ = [
    "DATA_NAMES",
    "build_parser",
    "load_checkpoint",
    "load_run_config",
    "main",
    "official_setup",
    "resolve_data_config",
    "run_config_defaults",
]

DATA_NAMES = {
    "cifar10": "alternet_pl.data.CIFAR10DataModule",
    "cifar100": "alternet_pl.data.CIFAR100DataModule",
    "imagenet": "alternet_pl.data.ImageNetDataModule",
    "synthetic": "alternet_pl.data.SyntheticDataModule",
}


class AnalysisFailed(CommandFailed):
    """One or more analyses failed; each wrote an error record (message and traceback)."""


def load_run_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"run config {path} not found (each run writes runs/<experiment>/<version>/config.yaml)"
        )
    with open(path) as fh:
        config = yaml.safe_load(fh) or {}
    for key in ("model", "data"):
        if key not in config:
            raise InputError(f"run config {path} has no '{key}' section; pass the config.yaml a run wrote")
    return config


def load_checkpoint(module: ImageClassifier, ckpt_path: str | Path, map_location: str = "cpu") -> int:
    """Load weights into `module` (weights-only read: a file holding code is refused); return the
    number of epochs completed when it was written (the label `fit` gives analyses of these weights).

    Raises `InputError` naming the file when it is missing, damaged, holds code or belongs to
    another architecture.
    """
    checkpoint = checkpoints.load_checkpoint(ckpt_path, map_location=map_location)
    checkpoints.load_state_dict_into(module, checkpoint, ckpt_path)
    return checkpoints.completed_epochs(checkpoint)


def run_config_defaults(run_config: dict[str, Any]) -> dict[str, Any]:
    """`{analysis name: init_args}` of the run config's `analyses:` entries: `analyze`'s defaults, so
    an analysis runs post hoc as it ran during training unless a flag says otherwise."""
    by_class = {cls.__name__: name for name, cls in ANALYSES.items()}
    defaults: dict[str, Any] = {}
    for entry in run_config.get("analyses") or []:
        path = entry.get("class_path", "") if isinstance(entry, dict) else ""
        name = by_class.get(path.split(".")[-1])
        if name is not None:
            defaults[name] = dict(entry.get("init_args") or {})
    return defaults


def _flatten(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"<prefix>.a.b": 1}: nested option groups as the parser's dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(f"{prefix}.{key}", value))
        else:
            flat[f"{prefix}.{key}"] = value
    return flat


def build_parser(
    defaults: dict[str, Any] | None = None, analyses: Sequence[str] | None = None
) -> ArgumentParser:
    """The `analyze` parser with the options of `analyses` (None: every registered one);
    `defaults` ({analysis name: init_args}) become those analyses' defaults.

    Raises:
        ValueError: a run-config option this version of the analysis does not take.
    """
    parser = ArgumentParser(description=__doc__, default_env=False)
    parser.add_argument("--config", type=str | None, default=None, help="the run's config.yaml")
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="checkpoint to analyse")
    parser.add_argument(
        "--official",
        type=str | None,
        default=None,
        help="an official checkpoint of the paper's authors (instead of --config / --ckpt_path)",
    )
    parser.add_argument(
        "--arch",
        type=str | None,
        default=None,
        help=f"with --official: its layout, one of {sorted(OFFICIAL_LAYOUTS)} (default: recognised)",
    )
    parser.add_argument(
        "--data",
        type=str | None,
        default=None,
        help=f"with --official: one of {sorted(DATA_NAMES)} or a YAML file with a data: section",
    )
    parser.add_argument("--data_root", type=str | None, default=None, help="with --data: the data's root")
    parser.add_argument(
        "--analyses_from",
        type=str | None,
        default=None,
        help="a YAML file whose analyses: entries give the defaults (e.g. configs/analysis/paper.yaml)",
    )
    parser.add_argument(
        "--analysis", type=str, nargs="+", required=True, help=f"one or more of: {sorted(ANALYSES)}"
    )
    parser.add_argument(
        "--out_dir", type=str | None, default=None, help="default: the checkpoint's run directory"
    )
    parser.add_argument(
        "--device",
        type=str,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda (default: cuda when available)",
    )
    chosen = sorted(ANALYSES) if analyses is None else [a for a in analyses if a in ANALYSES]
    for name in chosen:
        parser.add_class_arguments(ANALYSES[name], name, sub_configs=True)
    for name, init_args in (defaults or {}).items():
        if name not in chosen:
            continue
        try:
            parser.set_defaults(_flatten(name, init_args))
        except Exception as err:  # noqa: BLE001  (an option this version does not know)
            raise InputError(
                f"the run config's {name!r} analysis has options this version does not take "
                f"({err}); rewrite its `analyses:` entry (see CHANGELOG.md) or pass --out_dir and flags"
            ) from err
    return parser


def _first_pass(args: list[str]) -> argparse.Namespace:
    """`--config` and `--analysis` of the command line, read by a first, permissive parse (argparse's
    `parse_known_args`): the run config supplies the second parse's defaults, and only the chosen
    analyses are built."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--analysis", nargs="+")
    pre.add_argument("--analyses_from")
    pre.add_argument("--official")
    return pre.parse_known_args(args)[0]


def resolve_data_config(data: str, root: str | None = None) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` for `--data`: a name in DATA_NAMES or a YAML file with ``data:``.

    Raises:
        ValueError: neither a known name nor a readable YAML file with a ``data:`` section.
    """
    if data in DATA_NAMES:
        config: dict[str, Any] = {"class_path": DATA_NAMES[data], "init_args": {}}
    elif Path(data).is_file():
        loaded = yaml.safe_load(Path(data).read_text()) or {}
        section = loaded.get("data") if isinstance(loaded, dict) else None
        if not isinstance(section, dict) or "class_path" not in section:
            raise InputError(f"--data {data}: the file has no data: section with a class_path")
        config = {"class_path": section["class_path"], "init_args": dict(section.get("init_args") or {})}
    else:
        raise InputError(
            f"--data {data!r}: use one of {sorted(DATA_NAMES)} or a YAML file with a data: section"
        )
    if root is not None:
        config["init_args"]["root"] = root
    return config


def official_setup(
    path: str | Path, data: str, root: str | None = None, arch: str | None = None
) -> tuple[ImageClassifier, Any, dict[str, Any]]:
    """(module, datamodule, run config) for an official checkpoint: the loaded model inside an
    `ImageClassifier` with the paper's recipe, the data module `--data` names, and the config.yaml
    that describes them.

    Raises:
        ValueError: the data's class count differs from the checkpoint's.
    """
    model = load_official(path, arch)  # type: ignore[arg-type]
    layout = OFFICIAL_LAYOUTS[model.official_arch]
    num_classes = int(model.num_classes)
    model_config = {
        "model": layout.model,
        "model_kwargs": dict(layout.model_kwargs),
        "num_classes": num_classes,
    }
    module = ImageClassifier.with_model(model, **model_config)  # the loaded model, not built twice
    data_config = resolve_data_config(data, root)
    datamodule = instantiate_class((), data_config)
    data_classes = getattr(datamodule, "num_classes", num_classes)
    if data_classes != num_classes:
        raise InputError(
            f"the official {layout.name} checkpoint has {num_classes} classes but --data {data} has "
            f"{data_classes}; pass the data set it was trained on"
        )
    run_config = {
        "experiment": f"official/{layout.name}",
        "official": {"path": str(path), "arch": layout.name},
        "model": model_config,
        "data": data_config,
    }
    return module, datamodule, run_config


def main(args: list[str] | None = None) -> dict[str, Any]:
    args = list(args if args is not None else sys.argv[1:])
    first = _first_pass(args)
    has_config = first.config and Path(first.config).is_file() and not first.official
    run_config = load_run_config(first.config) if has_config else None
    defaults = run_config_defaults(run_config) if run_config else {}
    if first.analyses_from:
        source = Path(first.analyses_from)
        if not source.is_file():
            raise FileNotFoundError(f"--analyses_from {source}: no such file")
        defaults = {**run_config_defaults(yaml.safe_load(source.read_text()) or {}), **defaults}
    parser = build_parser(defaults or None, first.analysis)
    cfg = parser.parse_args(args)
    unknown = [a for a in cfg.analysis if a not in ANALYSES]
    if unknown:
        parser.error(f"unknown analysis {unknown}; registered: {sorted(ANALYSES)}")
    if cfg.official is not None:
        if cfg.config is not None or cfg.ckpt_path is not None:
            parser.error("--official replaces --config and --ckpt_path; pass one or the other")
        if cfg.data is None:
            parser.error(f"--official needs --data: one of {sorted(DATA_NAMES)} or a data config YAML")
        module, datamodule, official_config = official_setup(cfg.official, cfg.data, cfg.data_root, cfg.arch)
        module.to(cfg.device).eval()
        ckpt = Path(cfg.official)
        ckpt_stem = ckpt.name
        for suffix in (".tar", ".pth", ".pt"):  # the authors' files end in .pth.tar
            ckpt_stem = ckpt_stem.removesuffix(suffix)
        out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("runs") / str(official_config["experiment"])
        checkpoint_epoch = 0
        out_dir.mkdir(parents=True, exist_ok=True)
        write_config(out_dir, yaml.safe_dump(official_config, sort_keys=False))
    else:
        if cfg.config is None or cfg.ckpt_path is None:
            parser.error("pass --config RUN/config.yaml and --ckpt_path CKPT, or --official PATH --data NAME")
        if run_config is None:
            run_config = load_run_config(cfg.config)  # raises: not found / not a run config
        module = ImageClassifier(**dict(run_config["model"]))
        checkpoint_epoch = load_checkpoint(module, cfg.ckpt_path)
        module.to(cfg.device).eval()
        datamodule = instantiate_class((), run_config["data"])
        ckpt = Path(cfg.ckpt_path)
        ckpt_stem = ckpt.stem
        out_dir = Path(cfg.out_dir) if cfg.out_dir else analysis_root_of_checkpoint(ckpt)
    try:
        init = parser.instantiate(cfg)
    except (ValueError, TypeError) as err:  # an option out of range: the analysis's constructor says so
        raise InputError(f"invalid analysis option: {' '.join(str(err).split())}") from err
    results, failed = {}, []
    for name in cfg.analysis:
        callback = init[name]
        stem = result_stem(checkpoint_epoch, checkpoint=ckpt_stem)
        try:
            results[name] = callback.run(module, datamodule, out_dir, epoch=checkpoint_epoch, stem=stem)
        except Exception as err:  # noqa: BLE001  (recorded beside the results, then reported)
            record = write_error_record(out_dir, name, stem, checkpoint_epoch, err)
            failed.append(f"{name} ({' '.join(str(err).split())[:300]}; error record: {record})")
            print(f"{name}: FAILED, error record {record}", flush=True)
            continue
        print(f"{name}: {analysis_dir(out_dir, name) / stem}.*  {results[name].scalars()}", flush=True)
    if failed:
        raise AnalysisFailed(f"{len(failed)} of {len(cfg.analysis)} analyses failed: " + "; ".join(failed))
    return results


if __name__ == "__main__":
    run_command(main, sys.argv[1:])
