"""Training pieces: the LightningModule (`module`), its metrics, the NaN guard, safe checkpoints and resume."""

__all__ = ["checkpoints", "guards", "metrics", "module", "resume"]
