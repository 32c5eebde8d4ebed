"""`python -m alternet_pl.fit --config A.yaml [--config B.yaml ...] [--trainer.max_epochs=3 ...]`.

LightningCLI (run=False): configs compose left to right, flags override, `--print_config` shows
the merged result. Each run writes `runs/<experiment>/<version>/`: `config.yaml`,
`checkpoints/` (last + best by val/acc1), `metrics.csv` (CSVLogger, always on) and `analysis/`.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger

from alternet_pl.analysis.results import write_text
from alternet_pl.callbacks import AnalysisCallback
from alternet_pl.data import ImageDataModule
from alternet_pl.module import ImageClassifier
from alternet_pl.runs import RUN_DIR_ENV, global_rank_from_env, make_run_dir


def _as_list(value: Any) -> list:
    """A Trainer `logger` / `callbacks` value as a list (None, True and False: empty)."""
    if isinstance(value, list | tuple):
        return list(value)
    if value is None or isinstance(value, bool):
        return []
    return [value]


def default_checkpoint(run_dir: Path) -> ModelCheckpoint:
    """last.ckpt and the best checkpoint by val/acc1, in `<run_dir>/checkpoints/`."""
    return ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        monitor="val/acc1",
        mode="max",
        save_last=True,
        filename="best-epoch={epoch:03d}-acc1={val/acc1:.4f}",
        auto_insert_metric_name=False,
    )


class AlternetCLI(LightningCLI):
    """LightningCLI with run directories, always-on CSV logging, checkpoints and analysis callbacks.

    Only LightningCLI's public hooks: `add_arguments_to_parser` (our options),
    `before_instantiate_classes` (the run directory and its config.yaml) and `instantiate_trainer`
    (the run directory, the CSV logger, the default checkpoint and the analyses as Trainer arguments).
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--experiment",
            type=str | None,
            default=None,
            help="run name; default: the first --config file's name",
        )
        parser.add_argument("--runs_dir", type=str, default="runs", help="where runs/<experiment>/ live")
        parser.add_argument(
            "--version",
            type=str | None,
            default=None,
            help="version folder name; default version_N (never overwrites)",
        )
        parser.add_argument(
            "--analyses",
            type=list[AnalysisCallback] | None,
            default=None,
            help="analysis callbacks (see configs/analysis/*.yaml)",
        )

    def experiment_name(self) -> str:
        """`--experiment`, else the stem of the first `--config` file (jsonargparse records the
        files it read under `config`), else "default"."""
        if self.config.get("experiment"):
            return str(self.config["experiment"])
        files = self.config.get("config") or []
        return Path(str(files[0])).stem if files else "default"

    def before_instantiate_classes(self) -> None:
        config = self.config
        self.experiment = self.experiment_name()
        self.run_dir = make_run_dir(config.get("runs_dir", "runs"), self.experiment, config.get("version"))
        if global_rank_from_env() == 0:
            text = self.parser.dump(config, skip_unset=False)
            write_text(self.run_dir / "config.yaml", text)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = self.config_init.get("trainer") or {}
        loggers = [CSVLogger(save_dir=str(self.run_dir), name="", version="")]
        loggers += _as_list(trainer_config.get("logger"))
        callbacks = _as_list(trainer_config.get("callbacks"))
        checkpointing = trainer_config.get("enable_checkpointing", True) is not False
        if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks.append(default_checkpoint(self.run_dir))
        callbacks += list(self.config_init.get("analyses") or [])
        kwargs = {"default_root_dir": str(self.run_dir), "logger": loggers, "callbacks": callbacks, **kwargs}
        return super().instantiate_trainer(**kwargs)


def summarize(run_dir: Path, trainer: Trainer) -> str:
    """The lines printed at the end: where everything was written, and the final metrics."""
    lines = [f"Run directory: {run_dir}"]
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if metrics:
        lines.append("Final validation: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    ckpt = trainer.checkpoint_callback
    if isinstance(ckpt, ModelCheckpoint):
        if ckpt.best_model_path:
            lines.append(f"  best checkpoint: {ckpt.best_model_path}")
        if ckpt.last_model_path:
            lines.append(f"  last checkpoint: {ckpt.last_model_path}")
    for name in ("config.yaml", "metrics.csv"):
        if (run_dir / name).exists():
            lines.append(f"  {name}: {run_dir / name}")
    analysis = run_dir / "analysis"
    if analysis.is_dir():
        for sub in sorted(p for p in analysis.iterdir() if p.is_dir()):
            files = sorted(f.name for f in sub.iterdir() if not f.name.startswith("."))
            lines.append(f"  analysis/{sub.name}: {', '.join(files)}")
    return "\n".join(lines)


def main(args: list[str] | None = None) -> AlternetCLI:
    # our run directory holds config.yaml beside metrics.csv by design; CSVLogger only rewrites its own file
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    owns_env = RUN_DIR_ENV not in os.environ
    try:
        cli = AlternetCLI(
            ImageClassifier,
            ImageDataModule,
            subclass_mode_data=True,
            save_config_callback=None,
            run=False,
            args=args,
            # progress bars only on a terminal (logs and CI stay readable)
            trainer_defaults={"log_every_n_steps": 10, "enable_progress_bar": sys.stderr.isatty()},
            parser_kwargs={"default_env": False},
            seed_everything_default=0,
        )
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        if cli.trainer.global_rank == 0:
            print(summarize(cli.run_dir, cli.trainer), flush=True)
        return cli
    finally:
        if owns_env:
            os.environ.pop(RUN_DIR_ENV, None)


__all__ = ["AlternetCLI", "default_checkpoint", "main", "summarize"]

if __name__ == "__main__":
    main()
