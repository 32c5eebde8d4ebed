"""Training pieces: the LightningModule and its recipe groups, schedules, metrics, the NaN guard, safe
checkpoints, resume, and the batch split and BatchNorm synchronisation that keep N devices one run."""

__all__ = [
    "checkpoints",
    "guards",
    "metrics",
    "module",
    "recipe",
    "resume",
    "scaling",
    "schedules",
    "sync_batchnorm",
]
