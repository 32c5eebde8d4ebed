"""`analyze_model`: the analyses on a bare nn.Module from Python, same records as the callbacks,
model left untouched, figures per record."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from alternet_pl import analyze_model, plot_record
from alternet_pl.analysis import fourier, lesion, variance
from alternet_pl.analysis.records import FourierRecord, HessianRecord, LesionRecord, VarianceRecord
from alternet_pl.errors import InputError
from tests.test_anymodel import UserNet


def _loader(n: int = 12, batch: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 5, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def test_analyze_model_returns_the_analyses_records_and_leaves_the_model_alone(tmp_path):
    torch.manual_seed(0)
    model = UserNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    records = analyze_model(
        model, _loader(), analyses=["fourier", "variance", "lesion"], num_batches=2, out_dir=tmp_path
    )
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert isinstance(records["fourier"], FourierRecord) and isinstance(records["variance"], VarianceRecord)
    assert isinstance(records["lesion"], LesionRecord)
    batches = list(_loader())[:2]
    ref = fourier.run(model, None, batches, fourier.FourierOptions())
    np.testing.assert_allclose(records["fourier"].curves[-1], ref.curves[-1])
    assert records["fourier"].layers == ref.layers == ["stem", "stage.0", "stage.1", "stage.2"]
    ref_v = variance.run(model, None, batches, variance.VarianceOptions())
    np.testing.assert_allclose(records["variance"].variance, ref_v.variance)
    ref_l = lesion.run(model, None, batches, lesion.LesionOptions())
    assert records["lesion"].acc == ref_l.acc and records["lesion"].skipped == ref_l.skipped
    assert records["fourier"].settings["kinds"] == ["stem", "conv", "msa", "mlp", "other"]
    assert (tmp_path / "analysis" / "fourier" / "epoch=000.json").is_file()
    assert (tmp_path / "analysis" / "lesion" / "epoch=000.png").is_file()
    for record in records.values():
        figures = plot_record(record)
        assert figures[""].axes


@pytest.mark.slow
def test_analyze_model_options_and_blockwise_hessian_on_a_user_model():
    from alternet_pl.callbacks.options import DensityOptions, EigenOptions, TraceOptions

    torch.manual_seed(0)
    model = UserNet(c=4).double()
    batches = [(x.double(), y) for x, y in list(_loader(8))[:1]]
    spec = (
        "hessian",
        {
            "eigen": EigenOptions(k=1, bottom=False),
            "trace": TraceOptions(samples=0),
            "density": DensityOptions(enabled=False),
            "blockwise": True,
            "dtype": "float64",
        },
    )
    records = analyze_model(model, batches, analyses=[spec, ("fourier", {"layers": ["stage.*"]})])
    assert records["fourier"].layers == ["stage.0", "stage.1", "stage.2"]
    hess = records["hessian"]
    assert isinstance(hess, HessianRecord) and hess.block_names == ["stage.0", "stage.1", "stage.2"]
    assert hess.block_kinds == ["conv", "msa", "conv"]
    # the top eigenvalues against a dense float64 Hessian of the same loss (eval mode)
    model.eval()
    names = [n for n, _ in model.named_parameters()]
    x, y = batches[0]

    def loss(flat):
        chunks = dict(zip(names, torch.split(flat, sizes)))
        chunks = {n: c.reshape(shapes[n]) for n, c in chunks.items()}
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, chunks, (x,)), y)

    shapes = {n: p.shape for n, p in model.named_parameters()}
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    dense = torch.autograd.functional.hessian(loss, flat, vectorize=True)
    eig = torch.linalg.eigvalsh(dense)
    assert hess.top_eig == pytest.approx(float(eig[-1]), rel=1e-4)
    start = sizes[0] + sizes[1]  # stem.weight, stem.bias
    n0 = sum(s for n, s in zip(names, sizes) if n.startswith("stage.0."))
    block = dense[start : start + n0, start : start + n0]
    assert hess.block_top_eig[0] == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]), rel=1e-4)


def test_analyze_model_refuses_in_one_line():
    model = UserNet()
    with pytest.raises(InputError, match="analysis 'blob' unknown"):
        analyze_model(model, _loader(), analyses=["blob"])
    with pytest.raises(InputError, match="'trajectory' cannot run on a bare model"):
        analyze_model(model, _loader(), analyses=["trajectory"])
    with pytest.raises(InputError, match="holds no batches"):
        analyze_model(model, [], analyses=["fourier"])
    with pytest.raises(InputError, match="not one tensor"):
        analyze_model(model, torch.randn(2, 3, 16, 16), analyses=["fourier"])


def test_nested_options_as_plain_dicts_equal_the_dataclasses():
    """In a notebook, `eigen={"k": 1}` means `EigenOptions(k=1)`, as in a YAML config; a wrong field
    is one InputError line naming it."""
    from alternet_pl.callbacks.options import DensityOptions, EigenOptions, TraceOptions

    torch.manual_seed(0)
    model = UserNet(c=4).double()
    batches = [(x.double(), y) for x, y in list(_loader(8))[:1]]
    given = {"eigen": {"k": 2, "bottom": True}, "trace": {"samples": 0}, "density": {"enabled": False}}
    typed = {"eigen": EigenOptions(k=2, bottom=True), "trace": TraceOptions(samples=0),
             "density": DensityOptions(enabled=False)}  # fmt: skip
    plain = analyze_model(model, batches, analyses=[("hessian", {**given, "dtype": "float64"})])["hessian"]
    dataclass = analyze_model(model, batches, analyses=[("hessian", {**typed, "dtype": "float64"})])[
        "hessian"
    ]
    assert len(plain.eigenvalues) == 2 and np.isfinite(plain.min_eig)
    np.testing.assert_array_equal(plain.eigenvalues, dataclass.eigenvalues)
    assert plain.min_eig == dataclass.min_eig
    with pytest.raises(InputError, match="analysis 'hessian'.*kk"):
        analyze_model(model, batches, analyses=[("hessian", {"eigen": {"kk": 2}})])
