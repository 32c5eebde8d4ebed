"""`python -m alternet_pl.analyze --config RUN/config.yaml --ckpt_path CKPT --analysis NAME [NAME ...]`.

Runs the same analyses as the training callbacks, post hoc on a checkpoint, and writes the same
files (`<out_dir>/analysis/<name>/<stem>.json|npz|png`; `out_dir` defaults to the checkpoint's
run directory). The analyses run as the `analyses:` list `fit` takes (same type, same checks): each
named one's entry in the run config (`--analyses_from FILE`: in that file) with its flags
`--<name>.<option>` laid over it (see `--help`); names come from `alternet_pl.registry`.

The paper authors' checkpoints: `--official PATH --data cifar100 --analysis NAME ...` (instead of
`--config` / `--ckpt_path`) loads PATH with `alternet_pl.models.load_official` (layout recognised from
its tensors; `--arch` overrides), wraps it in an `ImageClassifier` with the paper's recipe (so
augmented-data analyses see Mixup / CutMix as in training) and writes to `runs/official/<layout>/`
(`--out_dir` overrides) as a run would, with a `config.yaml` naming the model and data.
Any timm model: `--model NAME [--model_kwargs JSON] [--weights FILE | --pretrained] --data ...`
(`alternet_pl.models.setup`; preprocessing from the model's pretrained_cfg, `--preprocess JSON` overrides;
files under `runs/models/<NAME>/`).
`--data` is cifar10, cifar100, imagenet, imagefolder, synthetic or a YAML file with a `data:` section (e.g.
configs/data/cifar100.yaml); `--data_root` sets its root. `--analyses_from FILE` takes the analyses'
defaults from a file's `analyses:` entries (e.g. configs/analysis/paper.yaml), as a run config would.
`--devices N` (or torchrun / srun) splits the work over N ranks; the records are one process's (`launch`).
"""

from __future__ import annotations

import sys
from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.cli import instantiate_class

from alternet_pl.analysis.dist import rank_and_world
from alternet_pl.callbacks import AnalysisCallback, AnalysisList
from alternet_pl.checks import (
    build_from_run_config,
    check_device,
    check_official_file,
    check_writable,
    load_run_config,
)
from alternet_pl.errors import (
    CommandFailed,
    InputError,
    MissingInputError,
    config_error_line,
    environment_error,
    run_command,
)
from alternet_pl.launch import add_rank_arguments, on_ranks, plan_ranks
from alternet_pl.models.official import OFFICIAL_LAYOUTS, load_official
from alternet_pl.registry import ANALYSES, closest, import_object, name_of_class_path
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
    "analysis_entries",
    "build_parser",
    "check_names",
    "instantiate_analyses",
    "load_checkpoint",
    "load_run_config",
    "main",
    "official_setup",
    "resolve_data_config",
    "run_analyses",
    "run_config_defaults",
]

DATA_NAMES = {
    "cifar10": "alternet_pl.data.CIFAR10DataModule",
    "cifar100": "alternet_pl.data.CIFAR100DataModule",
    "imagenet": "alternet_pl.data.ImageNetDataModule",
    "imagefolder": "alternet_pl.data.ImageFolderDataModule",
    "synthetic": "alternet_pl.data.SyntheticDataModule",
}


class AnalysisFailed(CommandFailed):
    """One or more analyses failed; each wrote an error record (message and traceback)."""


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
    """`{analysis name: init_args}` of a config's `analyses:` entries (names from `alternet_pl.registry`):
    `analyze`'s starting point, so an analysis runs post hoc as it ran during training unless a flag
    says otherwise."""
    defaults: dict[str, Any] = {}
    for entry in run_config.get("analyses") or []:
        path = entry.get("class_path", "") if isinstance(entry, dict) else ""
        name = name_of_class_path(path)
        if name is not None:
            defaults[name] = dict(entry.get("init_args") or {})
    return defaults


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` laid over it, nested groups merged key by key."""
    out = dict(base)
    for key, value in changes.items():
        inner = out.get(key)
        out[key] = _merged(inner, value) if isinstance(value, dict) and isinstance(inner, dict) else value
    return out


def build_parser() -> ArgumentParser:
    """The `analyze` parser: the command's options, `--analysis NAME ...`, and every registered
    analysis's options as `--<name>.<option>` (read only where given: the defaults are the run's)."""
    parser = ArgumentParser(description=__doc__, default_env=False, exit_on_error=False)
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
    parser.add_argument("--model", type=str | None, default=None, help="any timm model name (with --data)")
    parser.add_argument("--model_kwargs", type=str | None, default=None, help="with --model: JSON kwargs")
    parser.add_argument("--weights", type=str | None, default=None, help="with --model: a weights file")
    parser.add_argument("--pretrained", type=bool, default=False, help="with --model: timm's weights")
    parser.add_argument("--preprocess", type=str | None, default=None, help="with --model: JSON overrides")
    parser.add_argument(
        "--analyses_from",
        type=str | None,
        default=None,
        help="a YAML file whose analyses: entries give the defaults (e.g. configs/analysis/paper.yaml)",
    )
    parser.add_argument(
        "--analysis", type=str, nargs="+", required=True, help=f"one or more of: {list(ANALYSES)}"
    )
    parser.add_argument(
        "--out_dir", type=str | None, default=None, help="default: the checkpoint's run directory"
    )
    parser.add_argument(
        "--device", type=str | None, default=None, help="cpu or cuda (default: cuda when available)"
    )
    add_rank_arguments(parser)  # --devices, --num_nodes
    for name, entry in ANALYSES.items():
        parser.add_class_arguments(import_object(entry.callback), name, sub_configs=True)
    return parser


def check_names(names: Sequence[str]) -> None:
    """Every `--analysis` name is registered; else one line with the closest name.

    Raises `InputError`.
    """
    for name in names:
        if name not in ANALYSES:
            near = closest(name)
            hint = f"; did you mean {near!r}?" if near else ""
            raise InputError(f"--analysis {name!r} is not an analysis{hint} (one of {list(ANALYSES)})")


def analysis_entries(
    names: Sequence[str], defaults: dict[str, Any], flags: dict[str, Any]
) -> list[dict[str, Any]]:
    """The `analyses:` list (class_path + init_args, as `fit` takes it) of the named analyses: each
    one's `defaults` (the run config's entry) with its `--<name>.<option>` flags laid over them."""
    return [
        {
            "class_path": ANALYSES[name].callback,
            "init_args": _merged(defaults.get(name) or {}, flags.get(name) or {}),
        }
        for name in names
    ]


def instantiate_analyses(entries: list[dict[str, Any]]) -> list[AnalysisCallback]:
    """The callbacks of an `analyses:` list, read with `fit`'s own type (`AnalysisList`).

    Raises:
        InputError: an option the analysis does not take, a value of the wrong type or out of range
            (jsonargparse's or the constructor's own words, on one line).
    """
    parser = ArgumentParser(default_env=False, exit_on_error=False)
    parser.add_argument("--analyses", type=AnalysisList, default=None)
    try:
        init = parser.instantiate_classes(parser.parse_object({"analyses": entries}))
    except ArgumentError as err:
        raise InputError(
            f"{config_error_line(err)} (from a flag or the run config's analyses: entry)"
        ) from err
    except (ValueError, TypeError) as err:  # a constructor's own check
        raise InputError(f"invalid analysis option: {' '.join(str(err).split())}") from err
    return list(init.analyses)


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
        "network": {"name": layout.model, "kwargs": dict(layout.model_kwargs)},
        "num_classes": num_classes,
    }
    module = ImageClassifier(model, num_classes)  # the loaded model (not built twice), the paper's recipe
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


def _analyses_defaults(run_config: dict[str, Any] | None, analyses_from: str | None) -> dict[str, Any]:
    """{name: init_args}: the run config's entries, over those of `--analyses_from`."""
    defaults = run_config_defaults(run_config) if run_config else {}
    if analyses_from:
        source = Path(analyses_from)
        if not source.is_file():
            raise MissingInputError(
                f"--analyses_from {source}: no such file; pass a YAML file with an analyses: list "
                "(e.g. configs/analysis/paper.yaml)"
            )
        defaults = {**run_config_defaults(yaml.safe_load(source.read_text()) or {}), **defaults}
    return defaults


def main(args: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    cfg = parser.parse_args(list(args if args is not None else sys.argv[1:]), defaults=False)
    check_names(cfg.analysis)
    official, config, ckpt_path = cfg.get("official"), cfg.get("config"), cfg.get("ckpt_path")
    model_name = cfg.get("model")
    if (official or model_name) is not None and (config is not None or ckpt_path is not None):
        raise InputError("--official / --model replace --config and --ckpt_path; pass one or the other")
    if official is not None and model_name is not None:
        raise InputError("--official and --model both given; pass one")
    if (official or model_name) is not None and cfg.get("data") is None:
        raise InputError(f"--official / --model need --data: one of {sorted(DATA_NAMES)} or a data YAML")
    if official is None and model_name is None and (config is None or ckpt_path is None):
        raise InputError("pass --config RUN/config.yaml and --ckpt_path CKPT, or --official PATH --data NAME")
    run_config = load_run_config(config) if official is None and model_name is None else None
    defaults = _analyses_defaults(run_config, cfg.get("analyses_from"))
    flags = {name: cfg[name].as_dict() for name in cfg.analysis if cfg.get(name) is not None}
    callbacks = instantiate_analyses(analysis_entries(cfg.analysis, defaults, flags))
    device = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    plan = plan_ranks(cfg.get("devices"), cfg.get("num_nodes"), device)
    if model_name is not None:
        module, datamodule, out_dir, checkpoint_epoch, ckpt_stem = _model_setup(cfg)
    elif official is not None:
        check_official_file(official)
        module, datamodule, official_config = official_setup(
            official, cfg.data, cfg.get("data_root"), cfg.get("arch")
        )
        ckpt_stem = Path(official).name
        for suffix in (".tar", ".pth", ".pt"):  # the authors' files end in .pth.tar
            ckpt_stem = ckpt_stem.removesuffix(suffix)
        out_dir = Path(cfg.get("out_dir") or Path("runs") / str(official_config["experiment"]))
        checkpoint_epoch = 0
        out_dir.mkdir(parents=True, exist_ok=True)
        write_config(out_dir, yaml.safe_dump(official_config, sort_keys=False))
    else:
        module, datamodule = build_from_run_config(run_config, config)
        checkpoint_epoch = load_checkpoint(module, ckpt_path)
        ckpt = Path(ckpt_path)
        ckpt_stem = ckpt.stem
        out_dir = Path(cfg.get("out_dir") or analysis_root_of_checkpoint(ckpt))
    check_writable(out_dir)
    stem = result_stem(checkpoint_epoch, checkpoint=ckpt_stem)
    with on_ranks(plan, device, module):  # every check above ran before any other process started
        return run_analyses(
            dict(zip(cfg.analysis, callbacks)), module, datamodule, out_dir, checkpoint_epoch, stem
        )


def _model_setup(cfg: Any) -> tuple[Any, Any, Path, int, str]:
    """`--model NAME ...`: (module, datamodule, out_dir with its config.yaml written, epoch 0, stem)."""
    from alternet_pl.models.setup import model_setup, parse_json_option

    kwargs = parse_json_option("--model_kwargs", cfg.get("model_kwargs"))
    preprocess = parse_json_option("--preprocess", cfg.get("preprocess"))
    data_config = resolve_data_config(cfg.data, cfg.get("data_root"))
    weights = cfg.get("weights")
    module, datamodule, run_config = model_setup(
        cfg.model, data_config, kwargs, weights, bool(cfg.get("pretrained")), preprocess
    )
    out_dir = Path(cfg.get("out_dir") or Path("runs") / str(run_config["experiment"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_config(out_dir, yaml.safe_dump(run_config, sort_keys=False))
    stem = (
        Path(weights).name.split(".")[0] if weights else ("pretrained" if cfg.get("pretrained") else "random")
    )
    return module, datamodule, out_dir, 0, stem


def run_analyses(
    callbacks: dict[str, AnalysisCallback],
    module: ImageClassifier,
    datamodule: Any,
    out_dir: Path,
    epoch: int,
    stem: str,
) -> dict[str, Any]:
    """Run each analysis on every rank (rank 0 writes and prints); a failure writes its error record (the
    failing ranks do) and the others still run. Returns {name: record}. Raises `AnalysisFailed` (exit 3)
    naming every failed one at the end; on several ranks at the first (others may wait in a collective).
    """
    results, failed = {}, []
    rank, world = rank_and_world()
    for name, callback in callbacks.items():
        try:
            results[name] = callback.run(module, datamodule, out_dir, epoch=epoch, stem=stem)
        except Exception as err:  # noqa: BLE001  (recorded beside the results, then reported)
            if environment_error(err):  # a full disk: no error record can be written either
                raise
            record = write_error_record(out_dir, name, stem, epoch, err)  # by each rank that failed
            failed.append(f"{name} ({' '.join(str(err).split())[:300]}; error record: {record})")
            if world > 1:
                raise AnalysisFailed(f"rank {rank}: {failed[0]}") from err
            print(f"{name}: FAILED, error record {record}", flush=True)
            continue
        if rank == 0:
            print(f"{name}: {analysis_dir(out_dir, name) / stem}.*  {results[name].scalars()}", flush=True)
    if failed:
        raise AnalysisFailed(f"{len(failed)} of {len(callbacks)} analyses failed: " + "; ".join(failed))
    return results


if __name__ == "__main__":
    run_command(main, sys.argv[1:])
