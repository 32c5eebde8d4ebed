"""W&B offline unless the user configured an account: the one rule every W&B entry point follows."""

from __future__ import annotations

import netrc
import os

__all__ = ["default_wandb_offline"]


def default_wandb_offline() -> None:
    """Use W&B offline unless an API key (env or ~/.netrc) is configured or WANDB_MODE is set."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    os.environ["WANDB_MODE"] = "offline"
