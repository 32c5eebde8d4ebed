"""`HessianCallback` ("hessian"): extreme eigenvalues, trace, SLQ density, the per-mini-batch spectrum
and block-wise eigenvalues of the loss Hessian, on every rank (batches sharded, HVPs all-reduced).

Logged scalars: `hessian/top_eig`, `hessian/min_eig`, `hessian/trace` (+ `trace_stderr`, `num_hvps`).
Result: `HessianRecord`.
"""

from __future__ import annotations

from typing import Any, Literal

from alternet_pl.analysis.hessian.options import (
    DensityOptions,
    EigenOptions,
    HessianOptions,
    SpectrumOptions,
    TraceOptions,
)
from alternet_pl.analysis.hessian.run import run
from alternet_pl.analysis.options import WeightDecayTerm
from alternet_pl.analysis.records import HessianRecord
from alternet_pl.callbacks.base import AnalysisCallback, AnalysisContext
from alternet_pl.plots import hessian as plots

__all__ = ["HessianCallback"]


class HessianCallback(AnalysisCallback):
    """Hessian spectrum of the mean loss over the analysis batches: a declaration (schedule, data,
    logging) around `alternet_pl.analysis.hessian.run.run`, whose `HessianOptions` it holds whole.

    Defaults are the clean loss on validation batches; the paper's setting (augmented training
    batches with mixup, the weight-norm term 0.05, top-5 largest-magnitude eigenvalues per batch)
    is `configs/analysis/paper.yaml`.

    Args:
        eigen: extreme eigenvalues (top-k, and the bottom one).
        trace: the stochastic trace estimate (`samples=0` skips it).
        density: the SLQ spectral density.
        spectrum: the per-mini-batch spectrum (the paper's Fig. 1).
        blockwise: top/min eigenvalue of each residual block's own Hessian (`analysis_layers()` branches).
        weight_decay: a weight-decay term added to the loss (coefficient 0: the clean loss; "train":
            the training run's weight decay).
        mode: BatchNorm statistics, "eval" (running) or "train" (per batch, running stats untouched).
        dtype: precision of the products.
        cache_graph: reuse each batch's first-backward graph across products (one backward per
            product instead of forward + two; memory of the graphs; off automatically when the
            model is cast to another dtype).
        data, schedule, log_images, strict: see `AnalysisCallback`.
    """

    name = "hessian"
    run_analysis = staticmethod(run)

    def __init__(
        self,
        eigen: EigenOptions = EigenOptions(),
        trace: TraceOptions = TraceOptions(),
        density: DensityOptions = DensityOptions(),
        spectrum: SpectrumOptions = SpectrumOptions(),
        blockwise: bool = False,
        weight_decay: WeightDecayTerm = WeightDecayTerm(),
        mode: Literal["eval", "train"] = "eval",
        dtype: Literal["float32", "float64"] = "float32",
        cache_graph: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.options = HessianOptions(
            eigen=eigen,
            trace=trace,
            density=density,
            spectrum=spectrum,
            blockwise=blockwise,
            weight_decay=weight_decay,
            mode=mode,
            dtype=dtype,
            cache_graph=cache_graph,
            seed=self.data.seed,
        )

    def plot(self, record: HessianRecord, context: AnalysisContext) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        if record.density_nodes is not None:
            figures[""] = plots.density_figure(
                record.density_nodes,
                record.density_weights,
                record.top_eig,
                record.min_eig,
                title=f"Hessian density (epoch {context.epoch})",
            )
        if record.spectrum is not None:
            figures["spectrum"] = plots.spectrum_figure(record.spectrum)
        if record.block_top_eig is not None:
            figures["blockwise"] = plots.blockwise_figure(
                record.block_names, record.block_kinds, record.block_top_eig, record.block_min_eig
            )
        return figures
