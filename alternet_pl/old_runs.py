"""Runs written by alternet-pl before the recipe groups (up to commit 3354235), read in today's layout.

Their `config.yaml` and checkpoint hyperparameters hold `ImageClassifier`'s 22 flat arguments of then
(`model: {model, model_kwargs, lr, weight_decay, warmup_epochs, mixup_alpha, ...}`), and their
`data.batch_size` was per device. `FLAT_KEYS` says where each flat key went; `OLD_LAYOUT_DEFAULTS` what
an older config lacks. `fit --config <old run>/config.yaml --ckpt_path ...` resumes such a run
(`upgraded_config_args`), `analyze` and the report read it (`upgrade_run_config`, `upgrade_flat_config`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from alternet_pl.runs import CONFIG_FILE, global_rank_from_env

__all__ = [
    "FLAT_KEYS",
    "OLD_LAYOUT_DEFAULTS",
    "upgrade_flat_config",
    "upgrade_run_config",
    "upgraded_config_args",
    "upgraded_config_text",
]

#: where each flat `model:` key of an older run went in the grouped layout: `model.<key>` -> `model.<path>`
FLAT_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("network", "name"),
    "model_kwargs": ("network", "kwargs"),
    **{k: ("recipe", "optimizer", k) for k in ("lr", "lr_reference_batch", "weight_decay", "momentum")},
    **{k: ("recipe", "optimizer", k) for k in ("weight_decay_on", "nesterov")},
    "optimizer": ("recipe", "optimizer", "name"),
    "lr_schedule": ("recipe", "schedule", "kind"),
    "warmup_epochs": ("recipe", "schedule", "warmup_epochs"),
    "lr_milestones": ("recipe", "schedule", "milestones"),
    "lr_gamma": ("recipe", "schedule", "gamma"),
    "min_lr_ratio": ("recipe", "schedule", "min_lr_ratio"),
    **{k: ("recipe", "targets", k) for k in ("label_smoothing", "mixup_alpha", "cutmix_alpha")},
    **{k: ("recipe", "targets", k) for k in ("mixup_prob", "mixup_switch_prob")},
    **{k: ("recipe", "metrics", k) for k in ("ece_bins", "nll_average")},
}
#: top-level options an older run config lacks, set to what reproduces how it trained: its
#: `data.batch_size` was per device (today's `--scaling fast`; on one device the same as `faithful`)
OLD_LAYOUT_DEFAULTS: dict[str, Any] = {"scaling": "fast"}


def upgrade_flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """A `model:` config (or a checkpoint's hyperparameters) in the grouped layout: the flat keys of older
    runs (`FLAT_KEYS`) moved into `network` / `recipe`; a grouped config comes back as it was (copied)."""
    config = dict(config)
    if not set(config) & set(FLAT_KEYS):
        return config
    grouped: dict[str, Any] = {}
    for key, value in config.items():
        path = FLAT_KEYS.get(key, (key,))
        node = grouped
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = {} if key == "model_kwargs" and value is None else value
    return grouped


def _is_old_layout(config: Any) -> bool:
    model = config.get("model") if isinstance(config, dict) else None
    return isinstance(model, dict) and bool(set(model) & set(FLAT_KEYS))


def upgrade_run_config(config: dict[str, Any]) -> dict[str, Any]:
    """A whole run config in today's layout: an older run's flat `model:` grouped (`upgrade_flat_config`)
    and the options it lacks set as it trained (`OLD_LAYOUT_DEFAULTS`); today's configs come back as
    they were (copied)."""
    if not _is_old_layout(config):
        return dict(config)
    return {**OLD_LAYOUT_DEFAULTS, **config, "model": upgrade_flat_config(config["model"])}


def upgraded_config_text(path: str | os.PathLike) -> str | None:
    """The YAML text of the config file `path` in today's layout when an older run wrote it, else None
    (today's layout, not a file, not YAML: left to the parser). A run's `config.yaml` without an
    experiment name gets its run's (`runs/<experiment>/<version>/config.yaml`)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not _is_old_layout(config):
        return None
    config = upgrade_run_config(config)
    if not config.get("experiment") and path.name == CONFIG_FILE:
        config["experiment"] = path.resolve().parent.parent.name
    return yaml.safe_dump(config, sort_keys=False)


def upgraded_config_args(args: list[str]) -> list[str]:
    """Command-line `args` with each `--config FILE` (`-c FILE`, `--config=FILE`) that an older run wrote
    replaced by its text in today's layout (jsonargparse takes a config as text too); says so on rank 0."""
    upgraded = list(args)
    for index, arg in enumerate(args):
        if arg in ("--config", "-c") and index + 1 < len(args):
            where, prefix, path = index + 1, "", args[index + 1]
        elif arg.startswith("--config="):
            where, prefix, path = index, "--config=", arg.removeprefix("--config=")
        else:
            continue
        text = upgraded_config_text(path)
        if text is None:
            continue
        upgraded[where] = prefix + text
        if global_rank_from_env() == 0:
            print(
                f"alternet-pl: {path} was written before the recipe groups: its flat model keys are read "
                "grouped (model.network, model.recipe), with --scaling fast (its batch_size was per device)",
                file=sys.stderr,
            )
    return upgraded
