"""`python -m alternet_pl.fit --config A.yaml [--config B.yaml ...] [--trainer.max_epochs=3 ...]`.

LightningCLI (run=False): configs compose left to right, flags override, `--print_config` shows
the merged result. Each run writes `runs/<experiment>/<version>/`: `config.yaml`,
`checkpoints/` (last + best by val/acc1), `metrics.csv` (CSVLogger, always on) and `analysis/`.

`--ckpt_path last` (or a checkpoint path) resumes a run in its own directory (see
`alternet_pl.training.resume`); an input error ends the command with one line (`ALTERNET_DEBUG=1`: traceback).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from alternet_pl.callbacks import AnalysisList
from alternet_pl.data import ImageDataModule
from alternet_pl.errors import InputError, Interrupted, environment_error, run_command
from alternet_pl.old_runs import upgraded_config_args
from alternet_pl.runs import (
    ANALYSIS_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    RUN_DIR_ENV,
    RUN_DIRECTORY_LINE,
    checkpoints_dir,
    global_rank_from_env,
    job_version,
    make_run_dir,
    read_error_records,
    run_dir_of_checkpoint,
    write_config,
)
from alternet_pl.training import resume
from alternet_pl.training.checkpoints import LastCheckpoint, SafeCheckpointIO, load_checkpoint
from alternet_pl.training.guards import NonFiniteLossGuard
from alternet_pl.training.module import configured_classifier
from alternet_pl.training.requeue import RequeueAtBatchEnd
from alternet_pl.training.scaling import ScaleReport, Scaling, config_world_size, device_batch_size
from alternet_pl.training.sync_batchnorm import GlobalBatchNormSync


def _as_list(value: Any) -> list:
    """A Trainer `logger` / `callbacks` value as a list (None, True and False: empty)."""
    if isinstance(value, list | tuple):
        return list(value)
    if value is None or isinstance(value, bool):
        return []
    return [value]


def default_checkpoint(run_dir: Path) -> ModelCheckpoint:
    """The best checkpoint by val/acc1, in `<run_dir>/checkpoints/`."""
    return ModelCheckpoint(
        dirpath=str(checkpoints_dir(run_dir)),
        monitor="val/acc1",
        mode="max",
        filename="best-epoch={epoch:03d}-acc1={val/acc1:.4f}",
        auto_insert_metric_name=False,
    )


def last_checkpoint(run_dir: Path, every_n_steps: int | None = None) -> ModelCheckpoint:
    """`<run_dir>/checkpoints/last.ckpt`, rewritten after every epoch (and every `every_n_steps`).

    Separate from the best checkpoint: Lightning's `save_last` only writes when a best checkpoint
    is written, which would leave last.ckpt behind whenever val/acc1 does not improve.
    """
    return LastCheckpoint(str(checkpoints_dir(run_dir)), every_n_steps)


def _config_error(err: BaseException) -> str:
    """The constructor's own message, without jsonargparse's union-type wrapping, on one line."""
    text = " ".join(str(err).split())
    found = re.search(r"Errors: - (.*?)(?: - Expected a |$)", text)
    return found.group(1) if found else text


def _wants_gpu(trainer_config: dict[str, Any]) -> bool:
    accelerator = str(trainer_config.get("accelerator") or "auto")
    return accelerator in ("gpu", "cuda")


def _on_cpu(trainer_config: dict[str, Any]) -> bool:
    accelerator = str(trainer_config.get("accelerator") or "auto")
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


class AlternetCLI(LightningCLI):
    """LightningCLI with run directories, always-on CSV logging, checkpoints and analysis callbacks.

    Only LightningCLI's public hooks: `add_arguments_to_parser` (our options),
    `before_instantiate_classes` (the run directory and its config.yaml) and `instantiate_trainer`
    (the run directory, the CSV logger, the default checkpoint and the analyses as Trainer arguments).
    """

    def __init__(self, *args: Any, new_runs: list[Path] | None = None, **kwargs: Any) -> None:
        self.new_runs = new_runs if new_runs is not None else []
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
            "--ckpt_path",
            type=str | None,
            default=None,
            help="resume: `last` (this experiment's newest run, or --version) or a checkpoint file; the "
            "run goes on in the directory that holds it",
        )
        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=int | None,
            default=None,
            help="also rewrite checkpoints/last.ckpt every N training steps (less work lost on a crash)",
        )
        parser.add_argument(
            "--scaling",
            type=Scaling,
            default="faithful",
            help="faithful: data.batch_size is the global batch, split over the devices (the experiment's "
            "recipe on any number of devices); fast: every device loads data.batch_size, so the global "
            "batch and (with lr_reference_batch) the lr grow with the devices (configs/trainer/fast.yaml)",
        )
        parser.add_argument(
            "--analyses",
            type=AnalysisList,
            default=None,
            help="analysis callbacks (see configs/analysis/*.yaml; names in alternet_pl.registry)",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """LightningCLI's parsing, with each `--config` file that an older run wrote (flat `model:` keys)
        read in today's layout (`alternet_pl.old_runs`), so that the run resumes."""
        if not isinstance(args, dict | Namespace):
            given = list(sys.argv[1:] if args is None else args)
            upgraded = upgraded_config_args(given)
            args = upgraded if upgraded != given else args
        super().parse_arguments(parser, args)

    def experiment_name(self) -> str:
        """`--experiment`, else the stem of the first `--config` file (jsonargparse records the
        files it read under `config`), else "default"."""
        if self.config.get("experiment"):
            return str(self.config["experiment"])
        files = self.config.get("config") or []
        if not files:
            return "default"
        first = Path(str(files[0]))
        if first.name == CONFIG_FILE and resume.is_run_dir(first.parent):  # a run's own config
            return first.parent.parent.name
        return first.stem

    def before_instantiate_classes(self) -> None:
        config = self.config
        self.experiment = self.experiment_name()
        check_devices(config.get("trainer") or {})
        check_batch_split(config)
        self.resume_from: Path | None = None
        self.keep_rows: list[dict[str, str]] = []
        ckpt_path = config.get("ckpt_path")
        runs_root = config.get("runs_dir", "runs")
        version = config.get("version")
        parent = Path(runs_root) / self.experiment
        if ckpt_path == "last" and not os.environ.get(RUN_DIR_ENV):
            version, self.resume_from = resume.find_last(parent, version, job_version())
        elif ckpt_path and ckpt_path != "last":
            self.resume_from = resume.check_checkpoint_path(ckpt_path)
        checkpoint = load_checkpoint(self.resume_from) if self.resume_from is not None else None
        if checkpoint is not None:  # before any file is touched
            resume.check_same_model(self.resume_from, checkpoint, config.get("model"), self.experiment)
            own = run_dir_of_checkpoint(self.resume_from)
            if ckpt_path != "last" and own is not None and not os.environ.get(RUN_DIR_ENV):
                os.environ[RUN_DIR_ENV] = str(own)
        before = set(parent.iterdir()) if parent.is_dir() else None
        self.run_dir = make_run_dir(runs_root, self.experiment, version, reuse=bool(ckpt_path))
        if (
            global_rank_from_env() == 0
            and self.run_dir not in (before or ())
            and self.run_dir.parent == parent
        ):
            self.new_runs += (
                [self.run_dir] if before is not None else [self.run_dir, parent]
            )  # a failed start
        if ckpt_path == "last" and self.resume_from is None:  # a DDP rank, or a job's first start
            self.resume_from = resume.newest_checkpoint(self.run_dir)
            checkpoint = load_checkpoint(self.resume_from) if self.resume_from is not None else None
        if checkpoint is not None:
            self.keep_rows = resume.kept_rows(checkpoint, self.run_dir / METRICS_FILE)
        if global_rank_from_env() == 0 and not (self.resume_from and (self.run_dir / CONFIG_FILE).is_file()):
            config["experiment"] = self.experiment  # a resume with this file finds its experiment
            write_config(self.run_dir, self.parser.dump(config, skip_unset=False))

    def instantiate_classes(self) -> None:
        """LightningCLI's instantiation; a constructor that rejects a config value (ValueError /
        TypeError: unknown model, bad layout, out-of-range analysis option, ...) is an input error."""
        try:
            super().instantiate_classes()
        except (InputError, SystemExit):
            raise
        except (ValueError, TypeError) as err:
            raise InputError(f"invalid configuration: {_config_error(err)}") from err

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = self.config_init.get("trainer") or {}
        loggers = [
            resume.ResumingCSVLogger(
                save_dir=str(self.run_dir), name="", version="", keep_rows=self.keep_rows
            )
        ]
        loggers += _as_list(trainer_config.get("logger"))
        callbacks = _as_list(trainer_config.get("callbacks"))
        checkpointing = trainer_config.get("enable_checkpointing", True) is not False
        if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            every = self.config_init.get("checkpoint_every_n_steps")
            callbacks += [default_checkpoint(self.run_dir), last_checkpoint(self.run_dir, every)]
        scaling = self.config_init.get("scaling") or "faithful"
        if self.datamodule is not None and hasattr(self.datamodule, "scaling"):
            self.datamodule.scaling = scaling
        callbacks += [ScaleReport(scaling), NonFiniteLossGuard(), resume.RNGStates()]
        callbacks += [resume.MetricsRowCount(), RequeueAtBatchEnd()]  # SLURM's signal: save at a batch end
        callbacks += [resume.LoaderPosition(), resume.MetricStates()]
        callbacks += list(self.config_init.get("analyses") or [])
        plugins = _as_list(trainer_config.get("plugins"))
        if trainer_config.get("sync_batchnorm") and _on_cpu(trainer_config):
            kwargs["sync_batchnorm"] = False  # torch's SyncBatchNorm is GPU-only: the same statistics on CPUs
            plugins.append(GlobalBatchNormSync())
        if not any(isinstance(p, SafeCheckpointIO) for p in plugins):
            plugins.append(SafeCheckpointIO())
        kwargs = {
            "default_root_dir": str(self.run_dir),
            "logger": loggers,
            "callbacks": callbacks,
            "plugins": plugins,
            **kwargs,
        }
        trainer = super().instantiate_trainer(**kwargs)
        run_config = yaml.safe_load(self.parser.dump(self.config, skip_unset=False))
        for logger in trainer.loggers:  # W&B: the whole merged config, not only the model's arguments
            if hasattr(logger, "set_run_config"):
                logger.set_run_config(run_config)
        return trainer


def check_devices(trainer_config: dict[str, Any]) -> None:
    """A GPU config on a machine without a GPU: say which flags run it on CPUs (before any work).

    Raises `InputError`.
    """
    if _wants_gpu(trainer_config) and not torch.cuda.is_available():
        raise InputError(
            f"the trainer config asks for GPUs (accelerator={trainer_config.get('accelerator')}) but this "
            "machine has none; run it on CPUs with --trainer.accelerator=cpu --trainer.precision=32-true "
            "--trainer.devices=1 (or --trainer.devices=N --trainer.strategy=ddp for N CPU processes)"
        )


def check_batch_split(config: Any) -> None:
    """A faithful split of the global batch that does not divide over the devices: one line, before any
    work (the Trainer, the run directory and the processes are not made yet).

    Raises `InputError`.
    """
    trainer_config = config.get("trainer") or {}
    batch_size = (config.get("data") or {}).get("init_args", {}).get("batch_size")
    if isinstance(batch_size, int):
        accumulation = trainer_config.get("accumulate_grad_batches") or 1
        scaling = config.get("scaling") or "faithful"
        device_batch_size(batch_size, config_world_size(trainer_config), int(accumulation), scaling)


def summarize(run_dir: Path, trainer: Trainer) -> str:
    """The lines printed at the end: where everything was written, and the final metrics."""
    lines = [f"{RUN_DIRECTORY_LINE}{run_dir}"]
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if metrics:
        lines.append("Final validation: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    for ckpt in trainer.checkpoint_callbacks:
        if not isinstance(ckpt, ModelCheckpoint):
            continue
        if ckpt.monitor and ckpt.best_model_path:
            lines.append(f"  best checkpoint: {ckpt.best_model_path}")
        last = ckpt.last_model_path or (ckpt.best_model_path if ckpt.monitor is None else "")
        if last:
            lines.append(f"  last checkpoint: {last}")
            lines.append(
                f"  resume with: python -m alternet_pl.fit --config {run_dir / CONFIG_FILE} "
                f"--ckpt_path {shlex.quote(last)}"
            )
    for name in (CONFIG_FILE, METRICS_FILE):
        if (run_dir / name).exists():
            lines.append(f"  {name}: {run_dir / name}")
    analysis = run_dir / ANALYSIS_DIR
    if analysis.is_dir():
        for sub in sorted(p for p in analysis.iterdir() if p.is_dir()):
            files = sorted(f.name for f in sub.iterdir() if not f.name.startswith("."))
            lines.append(f"  analysis/{sub.name}: {', '.join(files)}")
    for failure in read_error_records(run_dir):
        message = " ".join(failure.error.split())[:200]
        lines.append(
            f"  FAILED analysis {failure.analysis} at epoch {failure.epoch}: {message} "
            f"(traceback in {failure.path})"
        )
    return "\n".join(lines)


def main(args: list[str] | None = None) -> AlternetCLI:
    # our run directory holds config.yaml beside metrics.csv by design; CSVLogger only rewrites its own file
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    # ImageDataModule's training loader resumes mid-epoch through LoaderPosition, which Lightning cannot see
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
    # a resume goes on in its own run directory, where its checkpoints already are
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    # Lightning's result collection builds torch's deprecated LeafSpec every step (harmless, theirs to fix)
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    owns_env = RUN_DIR_ENV not in os.environ
    new_runs: list[Path] = []
    cli = None
    try:
        cli = AlternetCLI(
            configured_classifier,  # ImageClassifier with the network as a config spec
            ImageDataModule,
            subclass_mode_data=True,
            save_config_callback=None,
            run=False,
            args=args,
            # progress bars only on a terminal (logs and CI stay readable)
            trainer_defaults={"log_every_n_steps": 10, "enable_progress_bar": sys.stderr.isatty()},
            parser_kwargs={"default_env": False, "exit_on_error": False},  # one-line config errors
            seed_everything_default=0,
            new_runs=new_runs,
        )
        resume_from = str(cli.resume_from) if cli.resume_from else None
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume_from)
        if resume_from:  # a run killed during its end-of-fit analyses: training is done, they are not
            resume.finish_fit_end_analyses(cli.trainer, cli.model)
        if cli.trainer.global_rank == 0:
            print(summarize(cli.run_dir, cli.trainer), flush=True)
        return cli
    except (KeyboardInterrupt, SystemExit, Exception) as err:
        failure = _failed_start(err, cli, new_runs)
        if failure is err:
            raise
        raise failure from err
    finally:
        if owns_env:
            os.environ.pop(RUN_DIR_ENV, None)


def _failed_start(err: BaseException, cli: AlternetCLI | None, new_runs: list[Path]) -> BaseException:
    """What `main` raises for `err`: the run folder a failed start made is removed; Ctrl-C and a full
    disk / read-only folder become one line naming what was kept and how to go on."""
    if new_runs and resume.remove_if_unstarted(new_runs[0]) and len(new_runs) > 1:
        with contextlib.suppress(OSError):
            new_runs[1].rmdir()  # the experiment folder this start made, if it is empty
    run_dir = getattr(cli, "run_dir", None)
    if isinstance(err, KeyboardInterrupt) or (
        isinstance(err, SystemExit) and cli is not None and cli.trainer.interrupted
    ):
        return Interrupted(f"stopped by Ctrl-C; {resume.what_was_kept(run_dir)}")
    line = environment_error(err) if isinstance(err, Exception) else None
    if line is not None and run_dir is not None:
        return InputError(f"{line}; {resume.what_was_kept(run_dir)}")
    return err


__all__ = ["AlternetCLI", "check_batch_split", "default_checkpoint", "main", "summarize"]

if __name__ == "__main__":
    run_command(main, sys.argv[1:])
