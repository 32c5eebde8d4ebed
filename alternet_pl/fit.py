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
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger

from alternet_pl.analysis.results import write_text
from alternet_pl.callbacks import AnalysisCallback
from alternet_pl.data import ImageDataModule, SyntheticDataModule
from alternet_pl.loggers import default_wandb_offline
from alternet_pl.module import ImageClassifier
from alternet_pl.runs import RUN_DIR_ENV, global_rank_from_env, make_run_dir


def _experiment_from_argv(argv: list[str]) -> str:
    """Default experiment name: the first `--config` file's stem."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1]).stem
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1]).stem
    return "default"


class AlternetCLI(LightningCLI):
    """LightningCLI with run directories, always-on CSV logging, checkpoints and analysis callbacks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.run_dir: Path | None = None
        argv = kwargs.get("args")
        self._argv = [str(a) for a in argv] if isinstance(argv, list) else sys.argv[1:]
        super().__init__(*args, **kwargs)

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

    def before_instantiate_classes(self) -> None:
        config = self.config
        experiment = config.get("experiment") or _experiment_from_argv(self._argv)
        self.run_dir = make_run_dir(config.get("runs_dir", "runs"), experiment, config.get("version"))
        os.environ.setdefault("WANDB_DIR", str(self.run_dir))
        default_wandb_offline()
        if global_rank_from_env() == 0:
            text = self.parser.dump(config, skip_none=False)
            write_text(self.run_dir / "config.yaml", text)
        self.experiment = experiment

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        run_dir = self.run_dir
        config["default_root_dir"] = str(run_dir)
        user_loggers = config.get("logger")
        if isinstance(user_loggers, Logger):
            user_loggers = [user_loggers]
        elif not isinstance(user_loggers, list):
            user_loggers = []
        for logger in user_loggers:
            if hasattr(logger, "_wandb_init"):  # W&B: grouped per experiment, files in the run directory
                logger._wandb_init["group"] = logger._wandb_init.get("group") or self.experiment
                if logger._wandb_init.get("dir") in (None, ".", "./"):
                    logger._wandb_init["dir"] = logger._save_dir = str(run_dir)
        config["logger"] = [CSVLogger(save_dir=str(run_dir), name="", version="")] + user_loggers
        analyses = self._get(self.config_init, "analyses") or []
        existing = config.get("callbacks") or []
        if not isinstance(existing, list):
            existing = [existing]
        if config.get("enable_checkpointing", True) is not False and not any(
            isinstance(c, ModelCheckpoint) for c in existing
        ):
            callbacks = callbacks + [
                ModelCheckpoint(
                    dirpath=str(run_dir / "checkpoints"),
                    monitor="val/acc1",
                    mode="max",
                    save_last=True,
                    filename="best-epoch={epoch:03d}-acc1={val/acc1:.4f}",
                    auto_insert_metric_name=False,
                )
            ]
        config["callbacks"] = existing
        return super()._instantiate_trainer(config, callbacks + list(analyses))


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


__all__ = ["AlternetCLI", "main", "SyntheticDataModule"]

if __name__ == "__main__":
    main()
