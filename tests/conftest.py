"""Shared test set-up and builders: micro models, seeded batches, state snapshots, dense Hessians.

Import the builders explicitly (``from tests.conftest import make_mlp, make_batches``): they are plain
functions, so each test says which model and data it uses.
"""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

os.environ.setdefault("WANDB_MODE", "disabled")  # tests never touch the network
torch.set_num_threads(1)  # tiny models: one thread is several times faster on shared cores


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


#: what Lightning's DDP launchers put into os.environ of the launching process
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "GROUP_RANK", "RANK", "WORLD_SIZE")


@pytest.fixture(autouse=True)
def _restore_environ():
    """Undo every test's changes to os.environ. An in-process Trainer with a DDP strategy leaves
    MASTER_PORT / LOCAL_RANK / NODE_RANK behind; a later `fit --trainer.strategy=ddp` subprocess that
    inherits LOCAL_RANK believes it is an already-launched rank, never starts rank 1, and waits for
    it until the process-group timeout."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


def launcher_free_env(**extra: str) -> dict[str, str]:
    """os.environ without any DDP launcher variable (for tests that start `fit` in a subprocess)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV and k != "ALTERNET_RUN_DIR"}
    env.update(extra)
    return env


# ---- models ------------------------------------------------------------------------------------------
def make_mlp() -> nn.Module:
    """Linear(4, 5) - Tanh - Linear(5, 3) in float64: 43 parameters, a dense Hessian in milliseconds."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def make_bn_cnn() -> nn.Module:
    """Conv - BatchNorm - Tanh - pool - Linear in float64 on (2, 5, 5) inputs, with non-trivial BN
    running statistics and affine parameters."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 3),
    ).double()
    bn = model[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return model


class SmallCNN(nn.Module):
    """Two conv + BN layers, dropout and a linear head on (3, H, W) inputs, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(self.drop(x.mean(dim=(2, 3))))


def make_small_cnn(seed: int = 0) -> SmallCNN:
    """`SmallCNN` in float64 with non-trivial BN running statistics and affine parameters."""
    torch.manual_seed(seed)
    model = SmallCNN().double()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 6, 6, dtype=torch.float64) * 2 + 0.5)
        for m in (model.bn1, model.bn2):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.3, 0.3)
    return model


# ---- data ---------------------------------------------------------------------------------------------
def make_batches(shape: tuple, sizes: tuple = (5, 3, 7), seed: int = 2, num_classes: int = 3) -> list:
    """Seeded float64 (inputs of `shape`, labels) batches of the given (uneven) sizes."""
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(n, *shape, generator=g, dtype=torch.float64),
            torch.randint(0, num_classes, (n,), generator=g),
        )
        for n in sizes
    ]


# ---- state snapshots ------------------------------------------------------------------------------------
def snapshot(module: nn.Module) -> dict:
    """Everything an analysis must leave as it found it: parameters, grads, buffers, modes, RNGs."""
    return {
        "params": {n: p.detach().clone() for n, p in module.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in module.named_parameters()},
        "buffers": {n: b.clone() for n, b in module.named_buffers()},
        "modes": {n: m.training for n, m in module.named_modules()},
        "rng": torch.get_rng_state().clone(),
        "np": np.random.get_state()[1].copy(),
    }


def assert_same(a: dict, b: dict) -> None:
    """Bit-identical snapshots."""
    for key in ("params", "buffers"):
        assert a[key].keys() == b[key].keys(), key
        assert all(torch.equal(a[key][n], b[key][n]) for n in a[key]), key
    assert a["grads"].keys() == b["grads"].keys()
    assert all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
        for x, y in zip(a["grads"].values(), b["grads"].values())
    )
    assert a["requires_grad"] == b["requires_grad"] and a["modes"] == b["modes"]
    assert torch.equal(a["rng"], b["rng"]) and np.array_equal(a["np"], b["np"])


# ---- references -----------------------------------------------------------------------------------------
def dense_hessian(model: nn.Module, batches: list, names: list[str] | None = None) -> torch.Tensor:
    """Full-batch Hessian of the mean cross-entropy (eval mode) by torch.func.hessian."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    names = names or list(params)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    flat0 = torch.cat([params[n].reshape(-1) for n in names])
    sizes = [params[n].numel() for n in names]

    def f(flat):
        new = dict(params)
        for n, t in zip(names, flat.split(sizes)):
            new[n] = t.view(params[n].shape)
        return F.cross_entropy(functional_call(model, new, (x,)), y)

    was = model.training
    model.eval()
    h = torch.func.hessian(f)(flat0)
    model.train(was)
    return h


HESSIAN_CASES = {"mlp": (make_mlp, (4,)), "cnn": (make_bn_cnn, (2, 5, 5))}


@pytest.fixture(scope="module", params=list(HESSIAN_CASES))
def hessian_case(request) -> tuple[nn.Module, list, torch.Tensor]:
    """(float64 model, three uneven batches, its dense full-batch Hessian) for the MLP and the BN CNN."""
    make, shape = HESSIAN_CASES[request.param]
    model = make()
    batches = make_batches(shape)
    return model, batches, dense_hessian(model, batches)


def micro_module_and_data(model_name: str = "alternet_cifar_micro") -> tuple:
    """A registered micro model in an `ImageClassifier` and a small synthetic datamodule (seeded)."""
    from alternet_pl.data.synthetic import SyntheticDataModule
    from alternet_pl.training.module import ImageClassifier, Network

    torch.manual_seed(0)
    module = ImageClassifier(Network(model_name), num_classes=10)
    dm = SyntheticDataModule(num_train=32, num_val=40, batch_size=16)
    return module, dm
