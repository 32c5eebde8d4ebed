"""The examples/ notebook runs in a real kernel (nbclient + ipykernel) and draws its figures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "analyses_on_any_model.ipynb"


@pytest.mark.slow
def test_the_analyses_notebook_runs_and_draws_its_figures(tmp_path, monkeypatch):
    import nbclient  # the dev extra: nbclient, ipykernel, nbformat
    import nbformat

    root = str(NOTEBOOK.parents[1])  # the kernel imports this checkout's alternet_pl
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb,
        timeout=600,
        startup_timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    for name in ("fourier", "variance", "hessian", "landscape", "top Hessian eigenvalue"):
        assert name in text
    points = "[('stem', 'stem'), " + ", ".join(f"('layer{i}.0', 'conv')" for i in range(1, 5)) + "]"
    assert points in text  # one point per block, each with its kind
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # Fourier, variance, landscape
