"""`GlobalBatchNorm` on 2 gloo ranks equals BatchNorm over the concatenated batch in one process: output,
input and parameter gradients, running statistics."""

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn

from alternet_pl.training.sync_batchnorm import GlobalBatchNorm, GlobalBatchNormSync
from tests.distributed import run_distributed


def _model() -> nn.Module:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.Tanh(), nn.Flatten())
    model.double()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model


def _batch() -> torch.Tensor:
    torch.manual_seed(4)
    return torch.randn(6, 3, 5, 5, dtype=torch.float64) * 2 + 1  # rank r takes rows 3r..3r+2


def _step(model: nn.Module, images: torch.Tensor, scale: float):
    images = images.clone().requires_grad_(True)
    out = model(images)
    (out.square().sum() * scale).backward()  # each rank: its share of the global objective
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out.detach(), images.grad, grads, {k: v.clone() for k, v in model[1].state_dict().items()}


def _on_rank():
    rank = dist.get_rank()
    model = GlobalBatchNormSync().apply(_model())
    assert isinstance(model[1], GlobalBatchNorm) and isinstance(model[1], nn.BatchNorm2d)
    result = _step(model, _batch()[3 * rank : 3 * rank + 3], 1.0)
    for grad in result[2].values():  # parameter gradients: summed over ranks (DDP averages; sums here)
        dist.all_reduce(grad)
    reverted = GlobalBatchNormSync().revert(model)
    assert type(reverted[1]) is nn.BatchNorm2d
    return result


@pytest.mark.slow
def test_global_batchnorm_on_two_ranks_equals_batchnorm_over_the_whole_batch():
    ranks = run_distributed(_on_rank, world_size=2)
    out, in_grad, grads, stats = _step(copy.deepcopy(_model()), _batch(), 1.0)
    torch.testing.assert_close(torch.cat([r[0] for r in ranks]), out)
    torch.testing.assert_close(torch.cat([r[1] for r in ranks]), in_grad)
    for rank in ranks:
        for name, grad in grads.items():
            torch.testing.assert_close(rank[2][name], grad, msg=name)
        for name, value in stats.items():
            torch.testing.assert_close(rank[3][name], value, msg=name)


def test_one_process_is_plain_batchnorm():
    plain, synced = _model(), GlobalBatchNormSync().apply(_model())
    for model in (plain, synced):
        model.train()
    torch.testing.assert_close(synced(_batch()), plain(_batch()))
    torch.testing.assert_close(synced[1].running_var, plain[1].running_var)
