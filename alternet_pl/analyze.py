"""`python -m alternet_pl.analyze --config RUN/config.yaml --ckpt_path CKPT --analysis NAME [NAME ...]`.

Runs the same analyses as the training callbacks, post hoc on a checkpoint, and writes the same
files (`<out_dir>/analysis/<name>/<stem>.json|npz|png`; `out_dir` defaults to the checkpoint's
run directory). Each analysis's options are flags `--<name>.<option>` (see `--help`); defaults come
from the run config's `analyses:` entry for that analysis when it has one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.cli import instantiate_class

from alternet_pl.callbacks import ANALYSES, AnalysisCallback
from alternet_pl.module import ImageClassifier


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


def _analysis_defaults(config: dict[str, Any], cls: type[AnalysisCallback]) -> dict[str, Any]:
    for entry in config.get("analyses") or []:
        path = entry.get("class_path", "") if isinstance(entry, dict) else ""
        if path.split(".")[-1] == cls.__name__:
            return dict(entry.get("init_args") or {})
    return {}


def build_parser() -> ArgumentParser:
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
    for name, cls in sorted(ANALYSES.items()):
        parser.add_class_arguments(cls, name, sub_configs=True)
    return parser


def main(args: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    cfg = parser.parse_args(args if args is not None else sys.argv[1:])
    unknown = [a for a in cfg.analysis if a not in ANALYSES]
    if unknown:
        parser.error(f"unknown analysis {unknown}; registered: {sorted(ANALYSES)}")
    run_config = load_run_config(cfg.config)
    model_cfg = dict(run_config["model"])
    module = ImageClassifier(**model_cfg)
    checkpoint_epoch = load_checkpoint(module, cfg.ckpt_path)
    module.to(cfg.device).eval()
    datamodule = instantiate_class((), run_config["data"])
    ckpt = Path(cfg.ckpt_path)
    out_dir = (
        Path(cfg.out_dir)
        if cfg.out_dir
        else (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent)
    )
    explicit = {a.split("=")[0].lstrip("-") for a in (args if args is not None else sys.argv[1:])}
    results = {}
    for name in cfg.analysis:
        cls = ANALYSES[name]
        kwargs = _analysis_defaults(run_config, cls)
        for key, value in cfg[name].as_dict().items():
            if key not in kwargs or f"{name}.{key}" in explicit:
                kwargs[key] = value
        callback = cls(**kwargs)
        stem = f"{ckpt.stem}-epoch={checkpoint_epoch:03d}"
        results[name] = callback.run(module, datamodule, out_dir, epoch=checkpoint_epoch, stem=stem)
        print(f"{name}: {out_dir / 'analysis' / name / stem}.*  {results[name].scalars}", flush=True)
    return results


if __name__ == "__main__":
    main()
