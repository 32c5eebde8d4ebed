"""Training pieces: the LightningModule, its metrics, the NaN guard, safe checkpoints and resume."""

__all__ = ["checkpoints", "guards", "metrics", "module", "resume"]
