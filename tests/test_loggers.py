"""W&B: offline without a key, and a failing W&B never stops training."""

import lightning.pytorch as pl

from alternet_pl.data import SyntheticDataModule
from alternet_pl.loggers import SafeWandbLogger, default_wandb_offline
from alternet_pl.training.module import ImageClassifier, Network
from alternet_pl.training.recipe import Recipe, TargetOptions


def test_offline_without_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    default_wandb_offline()
    import os

    assert os.environ["WANDB_MODE"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    default_wandb_offline()
    assert os.environ["WANDB_MODE"] == "online"  # an explicit choice is kept


def test_a_failing_wandb_does_not_stop_training(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise ConnectionError("wandb.ai unreachable")

    monkeypatch.setattr(pl.loggers.WandbLogger, "log_metrics", broken)
    monkeypatch.setattr(pl.loggers.WandbLogger, "log_hyperparams", broken)
    monkeypatch.setattr(pl.loggers.WandbLogger, "finalize", broken)
    logger = SafeWandbLogger(project="test", save_dir=str(tmp_path), offline=True)
    dm = SyntheticDataModule(num_train=32, num_val=16, batch_size=16)
    recipe = Recipe(targets=TargetOptions(mixup_alpha=0, cutmix_alpha=0))
    module = ImageClassifier(Network("resnet_cifar_micro"), recipe=recipe)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.state.finished and logger._failed  # W&B failed, switched itself off, training finished
    import wandb

    assert wandb.run is None  # the broken run was ended: a later fit in this process gets its own


def test_wandb_defaults_follow_the_run_directory(monkeypatch, tmp_path):
    from alternet_pl.runs import RUN_DIR_ENV

    run = tmp_path / "runs" / "alter_r50" / "version_3"
    monkeypatch.setenv(RUN_DIR_ENV, str(run))
    logger = SafeWandbLogger(project="test", offline=True)
    assert logger.save_dir == str(run) and logger._wandb_init["group"] == "alter_r50"
    mine = SafeWandbLogger(project="test", offline=True, save_dir=str(tmp_path), group="mine")
    assert mine.save_dir == str(tmp_path) and mine._wandb_init["group"] == "mine"
    monkeypatch.delenv(RUN_DIR_ENV)
    assert SafeWandbLogger(project="test", offline=True).save_dir == "."
