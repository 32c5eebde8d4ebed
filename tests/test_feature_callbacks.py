"""The feature callbacks (Fourier, variance, frequency noise, lesion) on a real micro model and
synthetic data: files written, values equal to the pure analyses, module left untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alternet_pl.analysis import fourier, lesion, robustness, variance
from tests.conftest import micro_module_and_data


def _snapshot(module):
    return (
        {k: v.clone() for k, v in module.state_dict().items()},
        {n: (None if p.grad is None else p.grad.clone()) for n, p in module.named_parameters()},
        {n: m.training for n, m in module.named_modules()},
    )


@pytest.mark.parametrize("name", ["fourier", "variance", "freq_noise", "lesion"])
def test_callbacks_write_results_and_restore_module(name, tmp_path):
    from alternet_pl.analysis.files import read_json
    from alternet_pl.callbacks import AnalysisData
    from alternet_pl.registry import ANALYSES, import_object

    module, dm = micro_module_and_data("vit_cifar_micro" if name == "lesion" else "alternet_cifar_micro")
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    x, y = dm.analysis_batches("train", 1, 8)[0]
    torch.nn.functional.cross_entropy(module(x), y).backward()
    opt.step()
    before = _snapshot(module)
    kwargs = {"freqs": [0.3, 0.9], "eps": 0.5} if name == "freq_noise" else {}
    cb = import_object(ANALYSES[name].callback)(data=AnalysisData(num_batches=2, batch_size=8), **kwargs)
    result = cb.run(module, dm, tmp_path, epoch=3, optimizers=[opt])
    after = _snapshot(module)
    assert all(torch.equal(v, after[0][k]) for k, v in before[0].items())
    assert all(torch.equal(v, after[1][k]) for k, v in before[1].items() if v is not None)
    assert before[2] == after[2]
    out = tmp_path / "analysis" / name
    assert (out / "epoch=003.json").is_file() and (out / "epoch=003.png").is_file()
    saved = read_json(out / "epoch=003.json")
    assert saved["record"] == type(result).__name__ and set(saved["scalars"]) == set(result.scalars())
    batches_ = dm.analysis_batches("val", 2, 8)
    if name == "fourier":
        ref = fourier.model_delta_log_amplitude(module.model, batches_)
        assert saved["layers"] == list(ref) and {"conv", "msa"} <= set(saved["kinds"])
        np.testing.assert_allclose(saved["hf"], [float(c[-1]) for c in ref.values()])
        assert "hf_change_msa" in result.by_kind and "hf_change_conv" in result.by_kind
    elif name == "variance":
        ref = variance.model_feature_map_variance(module.model, batches_)
        np.testing.assert_allclose(saved["variance"], list(ref.values()))
    elif name == "freq_noise":
        ref = robustness.frequency_noise_accuracy(module.model, batches_, [0.3, 0.9], 0.5, 0.2)
        np.testing.assert_allclose(saved["delta"], ref)
    else:
        assert any(n.endswith(".attn") for n in saved["layers"]) and "drop_msa" in result.scalars()
        assert saved["acc"] == list(lesion.lesion_accuracy(module.model, batches_).acc.values())


def test_freq_noise_plot_takes_several_runs(tmp_path):
    from alternet_pl.analysis.records import FreqNoiseRecord
    from alternet_pl.plots.features import load_freq_noise_runs, plot_freq_noise

    paths = []
    for run in ("resnet", "vit"):
        record = FreqNoiseRecord(
            freqs=[0.1, 0.5], eps=0.1, width=0.2, clean_acc=0.5, acc=[0.5, 0.4], delta=[0.0, -0.1]
        )
        paths.append(record.to_files(tmp_path / run / "v0" / "analysis" / "freq_noise", "epoch=001")["json"])
    runs = load_freq_noise_runs(paths)
    assert [r[0] for r in runs] == ["resnet/v0", "vit/v0"]
    fig = plot_freq_noise(runs)
    assert len(fig.axes[0].lines) == 3  # two runs + the zero line


def test_trainer_fit_runs_feature_callbacks(tmp_path):
    import lightning.pytorch as pl

    from alternet_pl.callbacks import AnalysisData
    from alternet_pl.callbacks.fourier import FourierCallback
    from alternet_pl.callbacks.robustness import FreqNoiseCallback
    from alternet_pl.callbacks.variance import VarianceCallback

    module, dm = micro_module_and_data()
    cbs = [
        FourierCallback(data=AnalysisData(num_batches=1, batch_size=8)),
        VarianceCallback(data=AnalysisData(num_batches=1, batch_size=8)),
        FreqNoiseCallback(freqs=[0.5], data=AnalysisData(num_batches=1, batch_size=8)),
    ]
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=cbs,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, dm)
    for name in ("fourier", "variance", "freq_noise"):
        assert list((tmp_path / "analysis" / name).glob("epoch=*.json")), name
