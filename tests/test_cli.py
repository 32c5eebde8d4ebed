"""The fit / analyze commands: config composition, run directories, files written, clear errors."""

import glob
import os
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import yaml

from alternet_pl import fit
from alternet_pl.analysis.records import HessianRecord
from alternet_pl.runs import make_run_dir
from alternet_pl.training.module import Network
from alternet_pl.training.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(glob.glob(str(ROOT / "experiments" / "**" / "*.yaml"), recursive=True))
TINY = [
    "--data.init_args.num_train=48",
    "--data.init_args.num_val=32",
    "--data.init_args.batch_size=16",
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def composed(path: str) -> list[Path]:
    """The config files an experiment is run with: build-up steps after alter_r50.yaml, the CPU scale's
    model fragments after experiments/cpu/base.yaml."""
    file = Path(path)
    if "buildup" in file.parts:
        return [ROOT / "experiments" / "alter_r50.yaml", file]
    if file.parent.name == "cpu" and file.name != "base.yaml":
        return [file.parent / "base.yaml", file]
    return [file]


def _last_set(files: list[Path], *keys: str, default=None):
    """The value of model.<keys> in the last of `files` that sets it, with the file (else `default`)."""
    for file in reversed(files):
        node = yaml.safe_load(file.read_text()).get("model") or {}
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            return node, file
    return default, None


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_experiment_passes_print_config(path, capsys):
    files = composed(path)
    with pytest.raises(SystemExit) as exit_info:
        fit.main([arg for f in files for arg in ("--config", str(f))] + ["--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"] and printed["trainer"]["max_epochs"]
    # the whole recipe is shown, every option of every group, with the values of the recipe file the
    # experiment names (read here on its own, over the groups' defaults)
    named, source = _last_set(files, "recipe")
    assert named is not None, f"{path}: no model.recipe in {files}"
    from_file = yaml.safe_load((source.parent / named).read_text())
    shown = printed["model"]["recipe"]
    assert {g: set(shown[g]) for g in shown} == {
        f.name: {o.name for o in fields(getattr(Recipe(), f.name))} for f in fields(Recipe)
    }
    assert Recipe.from_dict(shown) == Recipe.from_dict(from_file)
    for group, values in from_file.items():
        assert {k: shown[group][k] for k in values} == values, group
    network, _ = _last_set(files, "network", "name", default=Network().name)
    assert printed["model"]["network"]["name"] == network


def test_configs_compose_left_to_right(capsys):
    with pytest.raises(SystemExit):
        fit.main(
            [
                "--config",
                str(ROOT / "experiments/alter_r50.yaml"),
                "--config",
                str(ROOT / "configs/trainer/ddp.yaml"),
                "--trainer.max_epochs=7",
                "--print_config",
            ]
        )
    out = capsys.readouterr().out
    assert "strategy: ddp" in out and "precision: 32-true" in out and "max_epochs: 7" in out
    assert "sync_batchnorm: true" in out and "scaling: faithful" in out  # the authors' recipe on any N
    assert "alternet_cifar_50" in out


def test_unknown_config_key_is_rejected(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  modle: alternet_cifar_micro\n")
    from alternet_pl.errors import run_command

    with pytest.raises(SystemExit) as exit_info:
        run_command(
            fit.main,
            ["--config", str(ROOT / "experiments/quickstart.yaml"), "--config", str(bad), "--print_config"],
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "modle" in err, err  # one line


def test_short_quickstart_writes_run_directory(tmp_path):
    cli = fit.main(["--config", str(ROOT / "experiments/quickstart.yaml"), f"--runs_dir={tmp_path}", *TINY])
    run = tmp_path / "quickstart" / "version_0"
    assert cli.run_dir == run
    assert (run / "config.yaml").is_file() and "alternet_cifar_micro" in (run / "config.yaml").read_text()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/acc1", "val/acc5", "val/nll", "val/ece", "val/loss"} <= set(header)
    # a second run never overwrites the first
    fit.main(["--config", str(ROOT / "experiments/quickstart.yaml"), f"--runs_dir={tmp_path}", *TINY])
    assert (tmp_path / "quickstart" / "version_1" / "metrics.csv").is_file()
    assert (run / "metrics.csv").is_file()


def test_run_dir_is_never_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("ALTERNET_RUN_DIR", raising=False)
    for key in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "RANK", "SLURM_PROCID", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    # plain pops: monkeypatch.delenv would record each run's value and restore the first at teardown
    a = make_run_dir(tmp_path, "exp")
    os.environ.pop("ALTERNET_RUN_DIR")
    b = make_run_dir(tmp_path, "exp", version="mine")
    os.environ.pop("ALTERNET_RUN_DIR")
    c = make_run_dir(tmp_path, "exp", version="mine")
    os.environ.pop("ALTERNET_RUN_DIR")
    assert (a.name, b.name) == ("version_0", "mine")
    assert c != b and c.name.startswith("mine_version_")
    assert len({a, b, c}) == 3 and all(p.is_dir() for p in (a, b, c))


def test_analyze_rejects_a_corrupt_checkpoint(tmp_path):
    from alternet_pl.analyze import load_checkpoint
    from alternet_pl.training.module import ImageClassifier, Network

    module = ImageClassifier(Network("resnet_cifar_micro"))
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(module, broken)
    other = ImageClassifier(Network("alternet_cifar_micro"))
    torch.save({"state_dict": other.state_dict(), "epoch": 1}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="does not match the architecture"):
        load_checkpoint(module, tmp_path / "other.ckpt")


def test_quickstart_with_light_analyses_then_analyze_and_report(tmp_path):
    """The README's main job at toy size: fit + every light analysis, post-hoc analyze, figures."""
    from alternet_pl import analyze, report

    cli = fit.main(
        [
            "--config",
            str(ROOT / "experiments/quickstart.yaml"),
            "--config",
            str(ROOT / "configs/analysis/light.yaml"),
            f"--runs_dir={tmp_path}",
            *TINY,
            "--trainer.max_epochs=2",
        ]
    )  # the trajectory PCA needs two snapshots besides the final one
    run = cli.run_dir
    expected = {"hessian", "landscape", "trajectory", "fourier", "variance", "freq_noise", "lesion"}
    written = {p.name for p in (run / "analysis").iterdir()}
    assert expected <= written, expected - written
    for name in expected:
        assert list((run / "analysis" / name).glob("epoch=*.json")), name
        assert list((run / "analysis" / name).glob("epoch=*.png")), name
    assert not any(cb.failures for cb in cli.trainer.callbacks if hasattr(cb, "failures"))

    results = analyze.main(
        [
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints/last.ckpt"),
            "--analysis",
            "hessian",
            "fourier",
            "--hessian.eigen.k=2",
            "--hessian.trace.samples=0",
        ]
    )
    assert set(results) == {"hessian", "fourier"}
    post = sorted((run / "analysis" / "hessian").glob("last-epoch=*.json"))
    assert len(post) == 1
    settings = HessianRecord.from_files(post[0]).settings
    assert settings["eigen"]["k"] == 2 and settings["trace"]["samples"] == 0  # the flags
    assert settings["data"]["batch_size"] == 32 and settings["density"]["steps"] == 12  # the run's config
    assert results["hessian"].trace is None and len(results["hessian"].eigenvalues) == 2

    official = tmp_path / "cifar100_vit_ti_losslandscape.csv"  # the official repo's headerless layout
    rows = [
        [x, y, 9.0, 100.0, 2 + x * x + y * y] + [0.0] * 14 for y in (-1.0, 0.0, 1.0) for x in (-1.0, 0.0, 1.0)
    ]
    official.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    rep = report.main([str(run), "--out", str(tmp_path / "figures"), "--official-csv", str(official)])
    names = {p.name for p in rep.written}
    assert {
        "table_results.md",
        "report.md",
        "index.html",
        "fig2a_fourier_by_depth.png",
        "fig2b_freq_noise.png",
        "fig1a_loss_landscapes.png",
        "fig1a_loss_landscapes.pdf",
    } <= names
    # the light suite records no per-batch spectrum: the report says so instead of drawing SLQ nodes
    assert "Hessian spectra (hessian with spectrum" in (tmp_path / "figures" / "report.md").read_text()
    assert run_label_in((tmp_path / "figures" / "table_results.md").read_text(), run)


def run_label_in(text: str, run: Path) -> bool:
    return f"{run.parent.name}/{run.name}" in text


def _one_line_exit_2(main, args, capsys) -> str:
    """Run a command as `python -m` does; return its one error line (exit status 2)."""
    from alternet_pl.errors import run_command

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_command(main, args)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err, err
    return err


def test_analyze_rejects_unknown_analysis(tmp_path, capsys):
    from alternet_pl import analyze

    err = _one_line_exit_2(
        analyze.main, ["--config", "x.yaml", "--ckpt_path", "y.ckpt", "--analysis", "hesian"], capsys
    )
    assert "'hesian' is not an analysis; did you mean 'hessian'?" in err


def test_analyze_keeps_jsonargparse_words_for_analysis_options(tmp_path, capsys):
    """A flag or a run-config option the analysis does not take: jsonargparse's own words, one line."""
    from alternet_pl import analyze

    config = tmp_path / "config.yaml"
    config.write_text(
        "model: {model: resnet_cifar_micro}\ndata: {class_path: alternet_pl.data.SyntheticDataModule}\n"
        "analyses:\n  - class_path: alternet_pl.callbacks.hessian.HessianCallback\n"
        "    init_args: {eigen: {kk: 3}}\n"
    )
    args = ["--config", str(config), "--ckpt_path", "x.ckpt", "--analysis", "hessian"]
    err = _one_line_exit_2(analyze.main, args, capsys)
    assert "HessianCallback: Group 'eigen' does not accept option 'kk'" in err
    config.write_text(config.read_text().replace("kk: 3", "k: 3"))
    err = _one_line_exit_2(analyze.main, [*args, "--hessian.eigen.k=abc"], capsys)
    assert "hessian.eigen.k='abc' is not valid: expected int" in err
    err = _one_line_exit_2(analyze.main, [*args, "--hessian.eigen.k=0"], capsys)
    assert "EigenOptions: k=0" in err  # the constructor's own check


def test_fit_keeps_jsonargparse_words_for_analysis_entries(tmp_path, capsys):
    """A mistyped analysis class or option in fit's `analyses:` list: one line with what is wrong."""
    wrong_class = tmp_path / "a.yaml"
    wrong_class.write_text("analyses:\n  - class_path: FourierCallbak\n")
    wrong_option = tmp_path / "b.yaml"
    wrong_option.write_text("analyses:\n  - class_path: HessianCallback\n    init_args: {eigen: {kk: 3}}\n")
    base = ["--config", str(ROOT / "experiments/quickstart.yaml"), "--print_config", "--config"]
    err = _one_line_exit_2(fit.main, [*base, str(wrong_class)], capsys)
    assert "did you mean 'alternet_pl.callbacks.fourier.FourierCallback'?" in err
    err = _one_line_exit_2(fit.main, [*base, str(wrong_option)], capsys)
    assert "Group 'eigen' does not accept option 'kk'" in err


def test_fit_names_the_choices_of_a_recipe_option(capsys):
    """A value outside a recipe option's choices: one line with the key, the value and the choices."""
    base = ["--config", str(ROOT / "experiments/quickstart.yaml"), "--print_config"]
    err = _one_line_exit_2(fit.main, [*base, "--model.recipe.schedule.kind=cosine"], capsys)
    assert (
        "model.recipe.schedule.kind='cosine' is not valid: expected one of ['official', 'per_step', " in err
    )
    err = _one_line_exit_2(fit.main, [*base, "--model.recipe.optimizer.lrr=1"], capsys)
    assert "unrecognized arguments: --model.recipe.optimizer.lrr=1" in err


def test_experiment_defaults_to_the_first_config_files_name(tmp_path):
    exp = tmp_path / "my_exp.yaml"
    text = (ROOT / "experiments/quickstart.yaml").read_text().replace("experiment: quickstart\n", "")
    text = text.replace("../configs/recipe/", f"{ROOT}/configs/recipe/")  # relative to the file: moved
    exp.write_text(text)
    cli = fit.main(["--config", str(exp), f"--runs_dir={tmp_path / 'runs'}", *TINY, "--trainer.max_epochs=0"])
    assert cli.run_dir == tmp_path / "runs" / "my_exp" / "version_0"


def test_paper_fragment_shows_the_papers_choices(capsys):
    with pytest.raises(SystemExit):
        fit.main(
            [
                "--config",
                str(ROOT / "experiments/quickstart.yaml"),
                "--config",
                str(ROOT / "configs/analysis/paper.yaml"),
                "--print_config",
            ]
        )
    import yaml

    analyses = {
        a["class_path"].split(".")[-1]: a["init_args"]
        for a in yaml.safe_load(capsys.readouterr().out)["analyses"]
    }
    hessian, landscape = analyses["HessianCallback"], analyses["LandscapeCallback"]
    for options in (hessian, landscape):
        assert options["data"]["split"] == "train" and options["data"]["augment"] is True
        assert options["weight_decay"] == {"coefficient": "train", "form": "norm"}  # the run's own
    assert hessian["spectrum"] == {"enabled": True, "k": 5, "which": "LM", "tol": 1e-4, "max_iter": 200}
    assert hessian["eigen"]["tol"] == 1e-4 and hessian["eigen"]["max_iter"] == 200
    assert landscape["norm"] == "official"


def test_analyze_rejects_a_run_config_with_options_this_version_lacks(tmp_path):
    from alternet_pl import analyze

    config = tmp_path / "config.yaml"
    config.write_text(
        "model: {model: resnet_cifar_micro}\ndata: {class_path: alternet_pl.data.SyntheticDataModule}\n"
        "analyses:\n  - class_path: alternet_pl.callbacks.hessian.HessianCallback\n"
        "    init_args: {paper_setting: true}\n"
    )
    with pytest.raises(ValueError, match="paper_setting"):
        analyze.main(["--config", str(config), "--ckpt_path", "x.ckpt", "--analysis", "hessian"])
