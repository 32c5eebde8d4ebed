"""Hessian algorithms (Lanczos, power, Hutch++, SLQ, per-batch spectrum) vs dense eigvalsh in float64."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from alternet_pl.analysis import hessian as hs
from alternet_pl.analysis.loss import cross_entropy_loss
from tests.conftest import dense_hessian, make_batches, make_mlp


def op_for(model, batches, **kw):
    return hs.HessianOperator(model, cross_entropy_loss, batches, **kw)


@pytest.mark.parametrize("which,k", [("LA", 1), ("LA", 3), ("SA", 2), ("LM", 3), ("BE", 3)])
def test_lanczos_eigenvalues_match_eigvalsh(hessian_case, which, k):
    model, batches, h = hessian_case
    evals = torch.linalg.eigvalsh(h)
    res = hs.top_eigenvalues(op_for(model, batches), k=k, which=which, tol=1e-8, max_iter=h.shape[0])
    vals, vecs = res
    expected = {
        "LA": evals[-k:],
        "SA": evals[:k],
        "LM": evals[evals.abs().argsort()[-k:]].sort().values,
        "BE": torch.cat([evals[: k // 2], evals[-((k + 1) // 2) :]]),
    }[which]
    assert res.converged
    torch.testing.assert_close(vals, expected, rtol=1e-6, atol=1e-9)
    assert vecs.shape == (h.shape[0], k)
    true_res = (h @ vecs - vecs * vals).norm(dim=0)  # reported residual bounds are the true ones
    torch.testing.assert_close(res.residuals, true_res, rtol=1e-3, atol=1e-9)
    assert res.num_hvps < h.shape[0]  # stopped by the residual rule, not by exhausting the space


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_power_iteration_agrees(hessian_case, which):
    model, batches, h = hessian_case
    evals = torch.linalg.eigvalsh(h)
    res = hs.top_eigenvalues(
        op_for(model, batches), k=2, which=which, tol=1e-5, max_iter=3000, method="power"
    )
    expected = {"LA": evals[-2:], "SA": evals[:2], "LM": evals[evals.abs().argsort()[-2:]].sort().values}[
        which
    ]
    assert res.converged
    # residual r bounds the eigenvalue error by r^2 / gap: tol 1e-5 on residuals is far tighter here
    torch.testing.assert_close(res.eigenvalues, expected, rtol=1e-6, atol=1e-8)


def test_hutch_plus_plus_is_exact_when_the_sketch_spans_the_space(hessian_case):
    model, batches, h = hessian_case
    n = h.shape[0]
    mean, stderr = hs.trace(op_for(model, batches), num_samples=3 * n + 2, method="hutch++")
    assert mean == pytest.approx(float(h.trace()), rel=1e-8, abs=1e-10)
    assert stderr < 1e-8 * h.abs().max()


def test_hutchinson_is_unbiased_with_the_right_standard_error(hessian_case):
    model, batches, h = hessian_case
    m = 400
    mean, stderr = hs.trace(op_for(model, batches), num_samples=m, method="hutchinson", seed=1)
    # Var(z^T H z) for Rademacher z is 2 * sum_{i != j} H_ij^2: the estimator's true standard error
    true_se = math.sqrt(2 * float((h**2).sum() - (h.diagonal() ** 2).sum()) / m)
    assert stderr == pytest.approx(true_se, rel=0.25)
    assert abs(mean - float(h.trace())) < 4 * true_se


class Recording:
    """Wraps an operator and records every vector it is applied to (to check SLQ's quadrature exactly)."""

    def __init__(self, op):
        self.op, self.seen = op, []
        self.size, self.dtype, self.device = op.size, op.dtype, op.device

    def __matmul__(self, v):
        self.seen.append(v.clone())
        return self.op @ v


def test_slq_weights_and_moments(hessian_case):
    model, batches, h = hessian_case
    n = h.shape[0]
    runs, steps = 30, 8
    rec = Recording(op_for(model, batches))
    nodes, weights = hs.spectral_density(rec, num_runs=runs, num_steps=steps, seed=0)
    assert nodes.shape == weights.shape == (runs * steps,)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    evals = torch.linalg.eigvalsh(h)
    assert nodes.min() >= evals[0] - 1e-9 and nodes.max() <= evals[-1] + 1e-9
    probes = torch.stack(rec.seen[::steps])  # each run's normalised start vector
    for j in (1, 2):
        hj = torch.linalg.matrix_power(h, j)
        # Gauss quadrature with `steps` nodes is exact for degree <= 2 * steps - 1: q^T H^j q per run
        exact = torch.einsum("ri,ij,rj->r", probes, hj, probes).mean()
        assert float((weights * nodes**j).sum()) == pytest.approx(float(exact), rel=1e-9)
        # ... and unbiased for tr(H^j) / n, within 4 standard errors of a Rademacher quadratic form
        se = math.sqrt(2 * float((hj**2).sum() - (hj.diagonal() ** 2).sum()) / runs) / n
        assert abs(float(exact) - float(hj.trace()) / n) < 4 * se


def test_smoothed_density_integrates_to_one():
    nodes = torch.tensor([-1.0, 0.0, 3.0])
    weights = torch.tensor([0.2, 0.5, 0.3])
    grid = torch.linspace(-5, 8, 4001)
    dens = hs.smoothed_density(nodes, weights, grid, sigma=0.1)
    assert float(torch.trapezoid(dens, grid)) == pytest.approx(1.0, abs=1e-6)
    assert float(dens[(grid - 0.0).abs().argmin()]) == pytest.approx(
        0.5 / (0.1 * math.sqrt(2 * math.pi)), rel=1e-3
    )


def test_max_eigenvalue_spectrum_per_batch():
    model, batches = make_mlp(), make_batches((4,))

    def spectrum(max_iter, **kw):
        return hs.max_eigenvalue_spectrum(
            model,
            cross_entropy_loss,
            batches,
            k=2,
            which="LM",
            dtype=torch.float64,
            tol=1e-9,
            max_iter=max_iter,
            **kw,
        )

    spec = spectrum(43)
    assert spec.eigenvalues.shape == spec.residuals.shape == (3, 2) and spec.converged.shape == (3,)
    for row, b in zip(spec.eigenvalues, batches):
        ev = torch.linalg.eigvalsh(dense_hessian(model, [b]))
        torch.testing.assert_close(row, ev[ev.abs().argsort()[-2:]].sort().values, rtol=1e-7, atol=1e-10)
    # residuals: the true ||H x - theta x|| is small when converged; 2 Lanczos steps cannot converge.
    # Convergence is judged by the gap-sharpened error bound (<= 1e-9 relative, the eigenvalues match
    # the dense ones above), which allows residuals up to ~sqrt(1e-9 * |theta| * gap): 1e-6, not 1e-9.
    vals, res = spec.eigenvalues, spec.residuals
    assert spec.converged.all() and spec.unconverged_batches == [] and (res <= 1e-6 * vals.abs().max()).all()
    with pytest.warns(RuntimeWarning, match=r"batches \[0, 1, 2\] did not converge"):
        short = spectrum(2)
    assert not short.converged.any() and short.unconverged_batches == [0, 1, 2]
    assert (short.residuals > 1e-9 * vals.abs().max()).any()


def test_non_convergence_warns_with_residuals():
    model, batches = make_mlp(), make_batches((4,))
    with pytest.warns(RuntimeWarning, match="did not converge.*residuals"):
        res = hs.top_eigenvalues(op_for(model, batches), k=3, tol=1e-12, max_iter=3)
    assert not res.converged and res.residuals.shape == (3,)


def test_algorithms_accept_any_linear_operator():
    """A dense matrix, a scipy LinearOperator and an object with size/dtype/device/@ give the same
    eigenvalues, trace and SLQ as the matrix itself; results are frozen records."""
    import dataclasses

    import numpy as np
    import scipy.sparse.linalg as scipy_linalg

    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 30, generator=g, dtype=torch.float64)
    h = a + a.T
    evals = torch.linalg.eigvalsh(h)
    m = h.numpy()
    scipy_op = scipy_linalg.LinearOperator(
        (30, 30), matvec=lambda v: m @ v, matmat=lambda v: m @ v, dtype=np.float64
    )
    for op in (h, hs.DenseOperator(h), scipy_op):
        res = hs.top_eigenvalues(op, k=2, which="BE", tol=1e-10, max_iter=30)
        torch.testing.assert_close(res.eigenvalues, evals[[0, -1]], rtol=1e-9, atol=1e-10)
        assert res.converged and res.num_hvps <= 30
        tr = hs.trace(op, num_samples=3 * 30 + 2)
        assert tr.estimate == pytest.approx(float(h.trace()), abs=1e-8) and tr.num_hvps == 92
        dens = hs.spectral_density(op, num_runs=2, num_steps=5, seed=1)
        assert dens.num_hvps == 10 and float(dens.weights.sum()) == pytest.approx(1.0)
        nodes, weights = dens
        assert torch.equal(nodes, dens.nodes)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.converged = False
    with pytest.raises(TypeError, match="not a linear operator"):
        hs.top_eigenvalues([1.0, 2.0])


def _spectrum_matrix(evals: list[float], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(evals), len(evals), generator=gen, dtype=torch.float64))
    return (q * torch.tensor(evals, dtype=torch.float64)) @ q.T


@pytest.mark.parametrize("case", ["close_pair", "cluster", "power_law"])
def test_gap_sharpened_stopping_is_accurate_and_earlier(case):
    """At tol=1e-3 the top eigenvalue is within 1e-3 of dense eigvalsh on spectra built to fool a gap
    estimate (a second eigenvalue 1% or 0.05% below the top, which Lanczos resolves late: a plain
    residual^2 / (distance to the next Ritz value) stops there with errors of 2e-3 to 8e-3), wherever
    the residual rule (residual <= tol * |theta|) is accurate, and needs no more products than it."""
    gen = torch.Generator().manual_seed(1)
    evals = {
        "close_pair": [10.0, 9.9] + (torch.rand(398, generator=gen) * 5).tolist(),
        "cluster": [10.0, 9.995, 9.99, 9.9] + (torch.rand(396, generator=gen) * 8).tolist(),
        "power_law": (100 * torch.arange(1, 401).double() ** -1.5).tolist(),
    }[case]
    op = hs.DenseOperator(_spectrum_matrix(evals))
    top, checked = max(evals), 0
    for seed in range(5):
        res = hs.top_eigenvalues(op, k=1, which="LM", tol=1e-3, max_iter=300, seed=seed)
        assert res.converged and res.error_bounds.item() <= res.residuals.item()
        for steps in range(1, 300):  # where the residual rule stops, and how accurate it is there
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # exactly `steps` steps: no convergence
                old = hs.top_eigenvalues(op, k=1, which="LM", tol=1e-300, max_iter=steps, seed=seed)
            if old.residuals.item() <= 1e-3 * abs(old.eigenvalues.item()):
                break
        assert res.num_hvps <= steps, (seed, res.num_hvps, steps)
        if abs(old.eigenvalues.item() - top) <= 1e-3 * top:  # a start vector Krylov serves well
            checked += 1
            assert abs(res.eigenvalues.item() - top) <= 1e-3 * top, (seed, res.eigenvalues.item())
    assert checked >= 3
