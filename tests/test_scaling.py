"""The experiment's recipe on any number of devices (`fit --scaling faithful`, configs/trainer/ddp.yaml) and
the explicit trade for speed (configs/trainer/fast.yaml): batch split, start-up line, fp32 analyses."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alternet_pl import fit, registry
from alternet_pl.errors import InputError
from alternet_pl.training.checkpoints import load_checkpoint
from alternet_pl.training.scaling import ScaleSummary, config_world_size, device_batch_size, startup_line
from tests.conftest import launcher_free_env

ROOT = Path(__file__).resolve().parents[1]


def test_faithful_split_keeps_the_global_batch_and_refuses_what_does_not_divide():
    assert device_batch_size(96, 8) == 12 and device_batch_size(96, 1) == 96
    assert device_batch_size(96, 4, accumulation=2) == 12  # 4 devices x 12 x 2 steps = 96
    assert device_batch_size(96, 8, scaling="fast") == 96  # each device the whole batch: global 768
    with pytest.raises(
        InputError, match=r"global batch 96 does not split over 5 device\(s\).*--scaling fast"
    ):
        device_batch_size(96, 5)
    with pytest.raises(InputError, match="scaling='quick'"):
        device_batch_size(96, 1, scaling="quick")


def test_world_size_from_the_trainer_config():
    assert config_world_size({"accelerator": "cpu", "devices": 3}) == 3
    assert config_world_size({"accelerator": "gpu", "devices": "4", "num_nodes": 2}) == 8
    assert config_world_size({"accelerator": "gpu", "devices": [0, 2], "num_nodes": 4}) == 8
    assert config_world_size({"accelerator": "cpu", "devices": "auto"}) == 1
    gpus = max(1, torch.cuda.device_count())
    assert config_world_size({"accelerator": "gpu", "devices": "auto", "num_nodes": 4}) == 4 * gpus


def _summary(**changes):
    base = dict(
        devices=8, device_batch=12, accumulation=1, lr=1.25e-4, precision="32-true", bn_images=96,
        recipe_batch=96, recipe_lr=1.25e-4, scaling="faithful",
    )  # fmt: skip
    return ScaleSummary(**{**base, **changes})


def test_startup_line_says_whether_it_is_the_recipe_and_what_differs():
    faithful = startup_line(_summary())
    assert faithful.startswith(
        "alternet-pl: 8 device(s) x 12 per device = global batch 96, peak lr 0.000125, precision 32-true; "
        "the experiment's recipe"
    )
    assert "NOT" not in faithful
    fast = startup_line(_summary(device_batch=96, lr=1e-3, precision="bf16-mixed", scaling="fast"))
    assert fast == (  # BatchNorm per GPU sees 96 images: the authors' batch, so not a difference
        "alternet-pl: 8 device(s) x 96 per device = global batch 768, peak lr 0.001, precision bf16-mixed; "
        "NOT the experiment's recipe (scaling fast): global batch 768 instead of 96, peak lr 0.001 instead "
        "of 0.000125, precision bf16-mixed instead of 32-true."
    )
    unsynced = startup_line(_summary(bn_images=12))  # faithful batch, BatchNorm per GPU
    assert unsynced.endswith("BatchNorm statistics over 12 images instead of 96.")
    assert "NOT" not in startup_line(_summary(bn_images=None))  # a ViT: no BatchNorm to synchronise
    scaled = startup_line(
        _summary(
            lr=1e-3, recipe_lr=1e-3, lr_rule="0.000125 x 768/96", accumulation=2, device_batch=48,
            recipe_batch=768, bn_images=None, schedule="official, 5 warm-up epoch(s) of 300",
        )
    )  # fmt: skip
    assert scaled == (  # the lr's derivation, the accumulation and the schedule where they add information
        "alternet-pl: 8 device(s) x 48 per device x 2 accumulation = global batch 768, peak lr 0.001 "
        "(= 0.000125 x 768/96), precision 32-true, schedule official, 5 warm-up epoch(s) of 300; the "
        "experiment's recipe as its authors ran it (scaling faithful)"
    )


def _quick_fit(tmp_path, *flags):
    return [
        "--config", str(ROOT / "experiments/quickstart.yaml"),
        f"--runs_dir={tmp_path}", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--data.init_args.num_train=64",
        "--data.init_args.num_val=32", "--data.init_args.batch_size=16", *flags,
    ]  # fmt: skip


def test_fast_fragment_says_what_differs_from_the_recipe(tmp_path, caplog, recwarn):
    """configs/trainer/fast.yaml on one CPU process: the batch is the experiment's, bf16 is not."""
    flags = _quick_fit(
        tmp_path,
        "--config", str(ROOT / "configs/trainer/fast.yaml"), "--trainer.accelerator=cpu",
        "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
    )  # fmt: skip
    with caplog.at_level("INFO"):
        fit.main(flags)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alternet-pl: 1 device")]
    assert lines == [
        "alternet-pl: 1 device(s) x 16 per device = global batch 16, peak lr 0.002, precision bf16-mixed, "
        "schedule official, 1 warm-up epoch(s) of 1; NOT the experiment's recipe (scaling fast): precision "
        "bf16-mixed instead of 32-true."
    ]  # one line: the module prints none of its own
    noise = [str(w.message) for w in recwarn if "LeafSpec" in str(w.message)]
    assert noise == []  # Lightning's deprecated-LeafSpec warning at every step is filtered in fit


def test_a_global_batch_that_does_not_divide_is_refused_before_any_work(tmp_path):
    flags = _quick_fit(tmp_path, "--trainer.devices=3", "--trainer.strategy=ddp", "--trainer.accelerator=cpu")
    with pytest.raises(InputError, match=r"global batch 16 does not split over 3 device"):
        fit.main(flags)
    assert not (tmp_path / "quickstart").exists()  # no run directory, no process started


def _record_precision(seen):
    """Wrap every analysis's compute: note the autocast state and the dtype of the model's output."""
    originals = {}
    for name, entry in registry.ANALYSES.items():
        cls = registry.import_object(entry.callback)
        original = cls.compute

        def compute(self, model, loss_fn, batches, context, _original=original, _name=name):
            with torch.no_grad():
                out = model(batches[0][0][:2])
            seen[_name] = (torch.is_autocast_enabled("cpu"), out.dtype)
            return _original(self, model, loss_fn, batches, context)

        originals[cls] = cls.__dict__.get("compute")
        cls.compute = compute
    return originals


@pytest.mark.slow
def test_every_analysis_runs_in_fp32_under_bf16_training(tmp_path):
    """A bf16-mixed fit on the CPU with the light suite: each analysis sees autocast off and fp32 outputs,
    also when called from inside an autocast region (a hook that runs within Lightning's step context)."""
    seen: dict = {}
    originals = _record_precision(seen)
    try:
        flags = _quick_fit(
            tmp_path,
            "--config", str(ROOT / "configs/analysis/light.yaml"),
            "--config", str(ROOT / "configs/trainer/bf16.yaml"),
        )  # fmt: skip
        cli = fit.main(flags)
        assert set(seen) >= {"hessian", "landscape", "fourier", "variance", "freq_noise", "lesion"}, seen
        assert all(state == (False, torch.float32) for state in seen.values()), seen
        seen.clear()
        callbacks = [c for c in cli.trainer.callbacks if type(c).__name__ == "HessianCallback"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            callbacks[0].run(cli.model, cli.datamodule, tmp_path / "direct", epoch=0)
        assert seen == {"hessian": (False, torch.float32)}
    finally:
        for cls, original in originals.items():
            if original is None:
                del cls.compute  # inherited again
            else:
                cls.compute = original


def _fit_weights(tmp_path, name, *flags):
    cmd = [
        sys.executable, "-m", "alternet_pl.fit",
        "--config", str(ROOT / "experiments/quickstart.yaml"),
        f"--runs_dir={tmp_path}", f"--experiment={name}",
        "--data.class_path=tests.ordered_data.SameOrderSyntheticData",
        "--data.init_args.num_train=128", "--data.init_args.num_val=32", "--data.init_args.batch_size=32",
        "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu",
        "--model.recipe.optimizer.name=sgd", "--model.recipe.optimizer.momentum=0",
        "--model.recipe.optimizer.lr=5e-3", "--model.recipe.schedule.warmup_epochs=0", *flags,
    ]  # fmt: skip
    env = launcher_free_env(PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint(tmp_path / name / "version_0" / "checkpoints" / "last.ckpt")["state_dict"]
    return state, done.stdout + done.stderr


@pytest.mark.slow
def test_faithful_ddp_on_two_processes_equals_one_process_at_the_same_global_batch(tmp_path):
    """configs/trainer/ddp.yaml on 2 gloo ranks at global batch 32 (16 per rank, BatchNorm synchronised)
    against one process at batch 32: after 8 SGD steps every
    weight and BatchNorm statistic agrees. (AdamW is left out: it turns the float noise of gradients that
    are analytically zero, biases ahead of a BatchNorm, into lr-sized steps, in one process as in two.)"""
    single, _ = _fit_weights(tmp_path, "single", "--trainer.devices=1")
    ddp, log = _fit_weights(
        tmp_path, "ddp", "--config", str(ROOT / "configs/trainer/ddp.yaml"),
        "--trainer.accelerator=cpu", "--trainer.devices=2",
    )  # fmt: skip
    assert "alternet-pl: 2 device(s) x 16 per device = global batch 32, peak lr 0.005, precision 32-true, " \
        "schedule official, 0 warm-up epoch(s) of 2; the experiment's recipe" in log  # fmt: skip
    assert log.count("alternet-pl: ") == 1  # one start-up line, from rank 0 only
    assert single.keys() == ddp.keys()
    assert any("running_var" in k for k in single)
    moved = [k for k in single if single[k].is_floating_point()]
    for key in moved:
        torch.testing.assert_close(ddp[key], single[key], rtol=0, atol=1e-5, msg=key)
    for key in single:
        if key.endswith("num_batches_tracked"):
            assert int(ddp[key]) == int(single[key]) == 8
