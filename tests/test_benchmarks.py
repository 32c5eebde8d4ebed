"""The benchmark machinery: verdicts, the dense reference and forward-over-reverse products are right
(the GPU script's own tests: tests/test_gpu_benchmark.py)."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import hessian_suite
from benchmarks.table import Row, render, write_results


def test_row_verdicts_and_missed_rows_are_not_scored():
    assert Row("S", "f", "a", "b", [0.4, 0.6, 0.5], goal=0.5).status == "met"
    assert Row("S", "f", "a", "b", [0.4, 0.6, 0.55], goal=0.5).status == "not met"
    assert Row("S", "f", "a", "b", [2.0], goal=1.0, better="higher").status == "met"
    missed = Row("S", "f", "a", "b", [0.1], goal=0.5, missed="ours reached 2e-3")
    assert missed.status == "missed: ours reached 2e-3"
    count = hessian_suite._count_row("f", [10, 12], [None, None], "", 1.2, "peer", "")
    assert count.missed and not count.ratios  # a peer that never reaches the target is not scored
    count = hessian_suite._count_row("f", [10, 12], [20, None], "", 1.2, "peer", "")
    assert count.ratios == [0.5] and "missed 1/2" in count.baseline


def test_render_has_one_table_and_a_line_per_goal(tmp_path):
    rows = [Row("S", "fast", "1 s", "2 s", [0.5, 0.4, 0.6], goal=0.6), Row("S", "info", "3 s", "-")]
    text = render(rows, "t", "settings")
    assert text.count("| S |") == 2 and "0.500x" in text and "0.400-0.600" in text
    assert re.search(r"^- S: fast, goal <= 0.6x: met", text, re.M)
    path = write_results(text, tmp_path, "-x")
    assert path.read_text() == text and re.fullmatch(r"\d{4}-\d\d-\d\d-.+-x\.md", path.name)


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    batches = [
        (torch.randn(5, 3, 6, 6), torch.randint(0, 3, (5,))),
        (torch.randn(3, 3, 6, 6), torch.tensor([0, 1, 2])),
    ]
    return model, batches


def _dense_by_func(model, batches) -> torch.Tensor:
    """torch.func.hessian of the sample-weighted mean loss (float64): the independent check."""
    m = model.double()
    names = [n for n, _ in m.named_parameters()]
    shapes = [p.shape for p in m.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    def loss(v):
        params = {n: t.view(s) for n, t, s in zip(names, v.split([s.numel() for s in shapes]), shapes)}
        total = sum(
            F.cross_entropy(torch.func.functional_call(m, params, (x.double(),)), y, reduction="sum")
            for x, y in batches
        )
        return total / sum(len(y) for _, y in batches)

    return torch.func.hessian(loss)(flat)


def test_dense_reference_matches_torch_func_hessian():
    model, batches = _tiny()
    got = hessian_suite.dense_reference(model, batches, cache_dir=None)
    want = torch.linalg.eigvalsh(_dense_by_func(model, batches))
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


def test_forward_over_reverse_product_matches_the_dense_hessian():
    model, batches = _tiny()
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    h = _dense_by_func(model, [(x, y)])
    model = model.double()
    v = torch.randn(h.shape[0], dtype=torch.float64)
    got = hessian_suite.forward_over_reverse(model, (x.double(), y))(v)
    assert torch.allclose(got, h @ v, rtol=1e-9, atol=1e-12)


def test_models_x_analyses_times_cells_and_records_refusals(tmp_path):
    import pytest

    from benchmarks import models_x_analyses as mxa

    out = mxa.main(
        ["--models", "user_blocks", "--analyses", "fourier,trajectory", "--out", str(tmp_path / "t.md")]
    )
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| user_blocks |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["user_blocks", "32 px"] and float(cells[3]) > 0 and cells[4] == "refused [1]"
    assert "1. refused: analysis 'trajectory' cannot run on a bare model" in text
    cells, builds = mxa.run_cells(
        ["user_blocks"], ["lesion"], budget_s=0.0, workdir=tmp_path, say=lambda _: None
    )
    assert cells == [mxa.Cell("user_blocks", "lesion", not_run="budget of 0 s spent")] and builds == {}
    with pytest.raises(SystemExit, match=r"model\(s\) \['resnet999'\] unknown"):
        mxa.main(["--models", "resnet999"])
