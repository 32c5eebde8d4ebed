"""BatchNorm statistics over the global batch on CPU processes (gloo), where torch's `SyncBatchNorm` refuses.

`Trainer(sync_batchnorm=True)` uses `torch.nn.SyncBatchNorm`, which DDP accepts only on GPU modules. A CPU
DDP run (tests, `--trainer.accelerator=cpu`) gets `GlobalBatchNorm` instead: the same mathematics (batch
mean and biased variance over every rank's images, the running variance unbiased over the global count,
gradients through the all-reduce), in two differentiable all-reduces. `fit` picks it by itself.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import nn

__all__ = ["GlobalBatchNorm", "GlobalBatchNormSync"]


class _GlobalSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum over ranks of the gradients (each rank's loss uses the sum)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def _global_sum(tensor: torch.Tensor) -> torch.Tensor:
    return _GlobalSum.apply(tensor)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm layer whose training-mode statistics cover the images of every rank.

    Only ever made by swapping the class of an existing BatchNorm (`GlobalBatchNormSync.apply`), so
    parameters, buffers, hooks and the optimizer's references stay the same objects; `revert` swaps back.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (
            self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        ):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        local_count = input.new_tensor([input.numel() // input.size(1)])
        totals = _global_sum(torch.cat([input.sum(dims), local_count]))
        count = totals[-1]
        mean = totals[:-1] / count
        centred = input - mean.view(shape)
        var = _global_sum((centred * centred).sum(dims)) / count  # two passes: no E[x^2] - E[x]^2 loss
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                )
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


_VARIANTS: dict[type, type] = {}


def _global_variant(cls: type) -> type:
    """`GlobalBatchNorm` mixed into a BatchNorm class (its input check kept), made once per class."""
    if cls not in _VARIANTS:
        _VARIANTS[cls] = type(f"Global{cls.__name__}", (GlobalBatchNorm, cls), {})
    return _VARIANTS[cls]


class GlobalBatchNormSync(LayerSync):
    """Lightning `LayerSync` plugin: every BatchNorm becomes a `GlobalBatchNorm` for the fit, then reverts."""

    def apply(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
                module, GlobalBatchNorm
            ):
                module._class_before_sync = type(module)
                module.__class__ = _global_variant(type(module))
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            original = module.__dict__.pop("_class_before_sync", None)
            if original is not None:
                module.__class__ = original
        return model
