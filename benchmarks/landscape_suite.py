"""Landscape rows: a steps x steps grid over the same number of plain forward passes (its floor), and
over `loss-landscapes`' `random_plane` on a model without BatchNorm (its filter normalisation needs no
zero filters), each measured side by side, order alternating, in process CPU time."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alternet_pl.analysis.landscape import evaluate_grid, random_directions
from alternet_pl.analysis.loss import cross_entropy_loss
from benchmarks.table import Row, interleaved, ratios

SECTION = "Landscape"


def forward_floor(model: nn.Module, batches: list, cells: int) -> Callable[[], None]:
    """`cells` rounds of plain eval-mode forward passes over the batches: the least a grid can cost."""

    def run() -> None:
        model.eval()
        with torch.inference_mode():
            for _ in range(cells):
                for x, _y in batches:
                    model(x)

    return run


def our_grid(model: nn.Module, batches: list, steps: int) -> Callable[[], None]:
    """The whole `evaluate_grid` call, directions included."""

    def run() -> None:
        dirs = random_directions(model, n=2, seed=0)
        axis = np.linspace(-1, 1, steps)
        evaluate_grid(model, cross_entropy_loss, batches, dirs, [axis, axis], progress=False)

    return run


class PlainCNN(nn.Module):
    """A small CNN without BatchNorm, for `loss-landscapes`."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(64, 128, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


def peer_plane(model: nn.Module, batch: tuple, steps: int) -> Callable[[], None]:
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(F.cross_entropy, batch[0], batch[1])

    def run() -> None:
        copy_ = copy.deepcopy(model).eval()  # random_plane turns requires_grad off on its model
        with torch.no_grad():  # generous to the peer: it would otherwise build autograd graphs
            loss_landscapes.random_plane(copy_, metric, distance=1, steps=steps, normalization="filter")

    return run


def landscape_rows(
    model_name: str, steps: int, batch_size: int, num_batches: int, repeats: int, log
) -> list[Row]:
    import timm

    import alternet_pl.models  # noqa: F401

    torch.manual_seed(0)
    cells = steps * steps
    batches = [
        (torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))) for _ in range(num_batches)
    ]
    model = timm.create_model(model_name, num_classes=10)
    t = interleaved(
        {"floor": forward_floor(model, batches, cells), "grid": our_grid(model, batches, steps)}, repeats
    )
    med = lambda xs: f"{sorted(xs)[len(xs) // 2]:.2f} cpu s"  # noqa: E731
    rows = [
        Row(
            SECTION,
            f"{model_name} {steps}x{steps} grid / {cells} forward passes ({num_batches}x{batch_size} images)",
            med(t["grid"]),
            f"forwards {med(t['floor'])}",
            ratios(t["grid"], t["floor"]),
            goal=1.1,
        )
    ]
    log(f"  {model_name}: grid {med(t['grid'])}, forwards {med(t['floor'])}")
    try:
        import loss_landscapes  # noqa: F401
    except ImportError:
        rows.append(
            Row(SECTION, "grid vs loss-landscapes", "-", "not installed", missed="pip install -e '.[bench]'")
        )
        return rows
    single = (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    cnn = PlainCNN()
    t = interleaved(
        {
            "floor": forward_floor(cnn, [single], cells),
            "ours": our_grid(cnn, [single], steps),
            "theirs": peer_plane(cnn, single, steps),
        },
        repeats,
    )
    rows += [
        Row(
            SECTION,
            f"PlainCNN {steps}x{steps} grid, ours / loss-landscapes random_plane",
            med(t["ours"]),
            f"loss-landscapes {med(t['theirs'])}",
            ratios(t["ours"], t["theirs"]),
            goal=1.0,
            note="one batch (random_plane takes one); the peer runs under no_grad (it does not itself)",
        ),
        Row(
            SECTION,
            f"PlainCNN {steps}x{steps}, loss-landscapes random_plane / {cells} forward passes",
            med(t["theirs"]),
            f"forwards {med(t['floor'])}",
            ratios(t["theirs"], t["floor"]),
        ),
    ]
    log(f"  PlainCNN: ours {med(t['ours'])}, loss-landscapes {med(t['theirs'])}, forwards {med(t['floor'])}")
    return rows
