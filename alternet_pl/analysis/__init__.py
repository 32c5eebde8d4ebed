"""Pure-PyTorch analyses: functions over (model, loss_fn, batches) that know nothing of Lightning.

Convention: ``loss_fn(model, batch) -> (loss_mean, num_samples[, num_correct])``; the clean loss is
`loss.cross_entropy_loss`, a weight-decay term is added by `weight_decay.WeightDecayLoss`.

    hessian/        HessianOperator and its algorithms (eigenvalues, trace, density, spectrum)
    landscape/      random directions and loss grids       trajectory.py  PCA of saved weights
    fourier.py      log amplitude of feature maps          variance.py    feature-map variance
    lesion.py       accuracy with residual branches removed
    robustness.py   frequency-band noise and corruptions   freq.py        band masks and noise
    calibration.py  the one accuracy / NLL / ECE definition
    features.py     the one feature collector (taps)       params.py      parameter selection
    layers.py       the points of a depth curve of any model (analysis_layers() or discovered)
    loss.py         the clean loss                          weight_decay.py  the penalty forms
    state.py        restore_state, eval_mode                progress.py    the progress-bar rule
    dist.py         torch.distributed helpers               files.py       the atomic file writers
    records.py      one typed record per analysis result (what the writer writes, the report reads)
"""

__all__ = [
    "calibration",
    "dist",
    "features",
    "files",
    "fourier",
    "freq",
    "hessian",
    "landscape",
    "layers",
    "lesion",
    "loss",
    "params",
    "progress",
    "records",
    "robustness",
    "state",
    "trajectory",
    "variance",
    "weight_decay",
]
