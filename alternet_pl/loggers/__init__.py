"""Logging pieces: the W&B logger that never kills a run (`SafeWandbLogger`), the offline default, and
what reaches W&B besides Lightning's metrics (`tables`: analysis arrays, architecture tags, the report run).
"""

from alternet_pl.loggers.offline import default_wandb_offline
from alternet_pl.loggers.wandb import SafeWandbLogger

__all__ = ["SafeWandbLogger", "default_wandb_offline"]
