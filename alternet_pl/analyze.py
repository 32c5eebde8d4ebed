"""`python -m alternet_pl.analyze --config RUN/config.yaml --ckpt_path CKPT --analysis NAME [NAME ...]`.

Runs the same analyses as the training callbacks, post hoc on a checkpoint, and writes the same
files (`<out_dir>/analysis/<name>/<stem>.json|npz|png`; `out_dir` defaults to the checkpoint's
run directory). Each analysis's options are flags `--<name>.<option>` (see `--help`); their defaults
come from the run config's `analyses:` entry for that analysis when it has one.
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
from alternet_pl.module import ImageClassifier

__all__ = ["build_parser", "load_checkpoint", "load_run_config", "main", "run_config_defaults"]


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
            raise ValueError(f"run config {path} has no '{key}' section; pass the config.yaml a run wrote")
    return config


def load_checkpoint(module: ImageClassifier, ckpt_path: str | Path, map_location: str = "cpu") -> int:
    """Load weights into `module`, with errors that say what is wrong with the file; return its epoch."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt_path} not found")
    try:
        checkpoint = torch.load(ckpt_path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise ValueError(f"checkpoint {ckpt_path} is corrupt or not a torch checkpoint ({err})") from err
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if state is None:
        raise ValueError(f"checkpoint {ckpt_path} has no 'state_dict' (is it a Lightning checkpoint?)")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        arch = module.hparams.get("model")
        raise ValueError(
            f"checkpoint {ckpt_path} does not match the architecture {arch!r} of the run config; "
            f"pass the config.yaml of the run that wrote it. Details: {str(err).splitlines()[0]}"
        ) from err
    return int(checkpoint.get("epoch", 0))


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
    parser.add_argument("--config", type=str, required=True, help="the run's config.yaml")
    parser.add_argument("--ckpt_path", type=str, required=True, help="checkpoint to analyse")
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
            raise ValueError(
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
    return pre.parse_known_args(args)[0]


def main(args: list[str] | None = None) -> dict[str, Any]:
    args = list(args if args is not None else sys.argv[1:])
    first = _first_pass(args)
    run_config = load_run_config(first.config) if first.config and Path(first.config).is_file() else None
    parser = build_parser(run_config_defaults(run_config) if run_config else None, first.analysis)
    cfg = parser.parse_args(args)
    unknown = [a for a in cfg.analysis if a not in ANALYSES]
    if unknown:
        parser.error(f"unknown analysis {unknown}; registered: {sorted(ANALYSES)}")
    if run_config is None:
        run_config = load_run_config(cfg.config)  # raises: not found / not a run config
    module = ImageClassifier(**dict(run_config["model"]))
    checkpoint_epoch = load_checkpoint(module, cfg.ckpt_path)
    module.to(cfg.device).eval()
    datamodule = instantiate_class((), run_config["data"])
    ckpt = Path(cfg.ckpt_path)
    out_dir = (
        Path(cfg.out_dir)
        if cfg.out_dir
        else (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent)
    )
    init = parser.instantiate_classes(cfg)
    results = {}
    for name in cfg.analysis:
        callback = init[name]
        stem = f"{ckpt.stem}-epoch={checkpoint_epoch:03d}"
        results[name] = callback.run(module, datamodule, out_dir, epoch=checkpoint_epoch, stem=stem)
        print(f"{name}: {out_dir / 'analysis' / name / stem}.*  {results[name].scalars()}", flush=True)
    return results


if __name__ == "__main__":
    main()
