"""Every analysis on every kind of model, timed: seconds per (model, analysis), or the one line an
analysis refuses with, as a markdown table (default ``benchmarks/results/models_x_analyses.md``).

    python -m benchmarks.models_x_analyses                      # all (a budget of 600 s, 2 CPU cores)
    python -m benchmarks.models_x_analyses --models user_blocks,timm_resnet18 --analyses fourier,lesion

Each model is randomly initialised at a small fixed input (2 batches of 4 images, 10 classes) and
each analysis runs through `alternet_pl.analyze_model` at a small fixed size (`ANALYSES`). Models go
smallest first; a cell not started before ``--budget_s`` is over says so. Cells are wall-clock seconds
of one call, on whatever else the machine is doing (the table records the load average).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ANALYSES", "MODELS", "Cell", "main", "render", "run_cells"]

CLASSES = 10
BATCHES, BATCH_SIZE = 2, 4
DEFAULT_OUT = Path(__file__).parent / "results" / "models_x_analyses.md"


# ---- models ---------------------------------------------------------------------------------------


class _ConvBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class _AttnBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.attn = nn.MultiheadAttention(c, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x.flatten(2).transpose(1, 2))
        return x + self.attn(t, t, t)[0].transpose(1, 2).reshape(b, c, h, w)


class UserBlocks(nn.Module):
    """A user's model of blocks: a conv stem, a stage of conv / attention / conv blocks, a linear head."""

    def __init__(self, c: int = 16, classes: int = CLASSES) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, stride=2, padding=1)
        self.stage = nn.Sequential(_ConvBlock(c), _AttnBlock(c), _ConvBlock(c))
        self.head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage(self.stem(x)).mean(dim=(2, 3)))


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        import alternet_pl.models  # noqa: F401  (registers this project's models with timm)

        return timm.create_model(name, num_classes=CLASSES, **kwargs)

    return build


def _tv_vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    return VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=4,
        num_heads=4,
        hidden_dim=64,
        mlp_dim=128,
        num_classes=CLASSES,
    )


def _tv_resnet18() -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(num_classes=CLASSES)


@dataclass(frozen=True)
class ModelSpec:
    """A model to time: how to build it, its input side, and what it is (the table's words)."""

    build: Callable[[], nn.Module]
    side: int
    what: str


#: smallest first (a budget cuts the largest)
MODELS: dict[str, ModelSpec] = {
    "user_blocks": ModelSpec(UserBlocks, 32, "user nn.Module: conv, attention, conv blocks"),
    "ours_micro": ModelSpec(_timm("alternet_cifar_micro"), 32, "this project's alternet_cifar_micro"),
    "tv_vit": ModelSpec(_tv_vit, 32, "torchvision VisionTransformer, 4 layers, dim 64, patch 8"),
    "timm_test_coatnet": ModelSpec(_timm("test_coatnet", img_size=64), 64, "timm test_coatnet"),
    "timm_vit_tiny": ModelSpec(_timm("vit_tiny_patch16_224", img_size=32), 32, "timm vit_tiny_patch16_224"),
    "timm_mobilevit_xxs": ModelSpec(_timm("mobilevit_xxs"), 64, "timm mobilevit_xxs"),
    "timm_convnext_atto": ModelSpec(_timm("convnext_atto"), 64, "timm convnext_atto"),
    "timm_regnetx_002": ModelSpec(_timm("regnetx_002"), 64, "timm regnetx_002"),
    "timm_efficientnet_b0": ModelSpec(_timm("efficientnet_b0"), 64, "timm efficientnet_b0"),
    "timm_resnet18": ModelSpec(_timm("resnet18"), 64, "timm resnet18"),
    "tv_resnet18": ModelSpec(_tv_resnet18, 64, "torchvision resnet18"),
    "timm_swin_tiny": ModelSpec(
        _timm("swin_tiny_patch4_window7_224", img_size=56), 56, "timm swin_tiny_patch4_window7_224"
    ),
}


# ---- analyses -------------------------------------------------------------------------------------


def _hessian(blockwise: bool) -> tuple[str, dict[str, Any]]:
    from alternet_pl.callbacks.options import DensityOptions, EigenOptions, TraceOptions

    eigen = EigenOptions(k=1, bottom=False, tol=1e-2, max_iter=4) if blockwise else None
    return (
        "hessian",
        {
            "eigen": eigen or EigenOptions(k=2, bottom=False, tol=1e-2, max_iter=8),
            "trace": TraceOptions(samples=0),
            "density": DensityOptions(enabled=False),
            "blockwise": blockwise,
        },
    )


def _corruption(root: Path) -> tuple[str, dict[str, Any]]:
    return (
        "corruption",
        {
            "root": str(root),
            "corruptions": ["fog", "snow"],
            "severities": (1, 3),
            "eval_batch_size": BATCH_SIZE,
            "mean": (0.5, 0.5, 0.5),
            "std": (0.25, 0.25, 0.25),
            "baseline": "alexnet_cifar10",
            "baseline_clean_error": None,
        },
    )


#: column -> (what is measured, spec builder from the corrupted-set folder)
ANALYSES: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "fourier": ("Fourier depth curve", lambda _root: "fourier"),
    "variance": ("feature-map variance", lambda _root: "variance"),
    "lesion": ("lesion of each block", lambda _root: "lesion"),
    "freq_noise": ("3 frequency bands", lambda _root: ("freq_noise", {"freqs": (0.1, 0.5, 0.9)})),
    "corruption": ("2 corruptions x 2 severities x 4 images", _corruption),
    "landscape": ("3x3 grid", lambda _root: ("landscape", {"steps": 3, "dims": 2})),
    "hessian": ("top-2, <= 8 Lanczos steps (timing only: not converged)", lambda _root: _hessian(False)),
    "hessian_blockwise": (
        "top-1 of the model and of each block, <= 4 Lanczos steps each",
        lambda _root: _hessian(True),
    ),
    "trajectory": ("needs a run's checkpoints", lambda _root: "trajectory"),
}


def _batches(side: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(BATCH_SIZE, 3, side, side, generator=g),
            torch.randint(0, CLASSES, (BATCH_SIZE,), generator=g),
        )
        for _ in range(BATCHES)
    ]


def _corrupted_set(folder: Path, side: int) -> Path:
    """A CIFAR-C layout at ``side`` px: fog and snow, 4 images per severity, random labels."""
    root = folder / f"cifar10c-{side}"
    if not root.is_dir():
        root.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for name in ("fog", "snow"):
            np.save(
                root / f"{name}.npy", rng.integers(0, 256, (5 * BATCH_SIZE, side, side, 3), dtype=np.uint8)
            )
        np.save(root / "labels.npy", rng.integers(0, CLASSES, 5 * BATCH_SIZE))
    return root


# ---- running and the table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One (model, analysis): seconds, or the line it refused / failed with, or why it did not run."""

    model: str
    analysis: str
    seconds: float | None = None
    refused: str = ""
    failed: str = ""
    not_run: str = ""


def _one(model: nn.Module, batches: list, spec: Any, name: str, analysis: str) -> Cell:
    from alternet_pl import analyze_model
    from alternet_pl.errors import InputError

    start = time.perf_counter()
    try:
        with warnings.catch_warnings():  # a few Lanczos steps do not converge: timing only
            warnings.simplefilter("ignore", RuntimeWarning)
            analyze_model(model, batches, analyses=[spec])
    except InputError as err:
        return Cell(name, analysis, refused=str(err).splitlines()[0])
    except Exception as err:  # noqa: BLE001  (the table reports every failure, then goes on)
        return Cell(name, analysis, failed=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
    return Cell(name, analysis, seconds=time.perf_counter() - start)


def run_cells(
    models: list[str], analyses: list[str], budget_s: float, workdir: Path, say: Callable[[str], None] = print
) -> tuple[list[Cell], dict[str, float]]:
    """Every (model, analysis) cell in order, until ``budget_s`` is spent; (cells, build seconds)."""
    start, cells, builds = time.perf_counter(), [], {}
    for name in models:
        spec = MODELS[name]
        if time.perf_counter() - start > budget_s:
            cells += [Cell(name, a, not_run=f"budget of {budget_s:.0f} s spent") for a in analyses]
            continue
        torch.manual_seed(0)
        t0 = time.perf_counter()
        model = spec.build().eval()
        builds[name] = time.perf_counter() - t0
        batches = _batches(spec.side)
        for analysis in analyses:
            if time.perf_counter() - start > budget_s:
                cells.append(Cell(name, analysis, not_run=f"budget of {budget_s:.0f} s spent"))
                continue
            cell = _one(
                model, batches, ANALYSES[analysis][1](_corrupted_set(workdir, spec.side)), name, analysis
            )
            cells.append(cell)
            shown = f"{cell.seconds:.2f} s" if cell.seconds is not None else (cell.refused or cell.failed)
            say(f"{name:22s} {analysis:18s} {shown}")
    return cells, builds


def _machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (
        f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPU cores, torch threads "
        f"{torch.get_num_threads()}), load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )


def render(cells: list[Cell], builds: dict[str, float], header: dict[str, str]) -> str:
    """The markdown table: one row per model, one column per analysis; refusals and failures as notes."""
    models = list(dict.fromkeys(c.model for c in cells))
    analyses = list(dict.fromkeys(c.analysis for c in cells))
    notes: dict[str, int] = {}
    lines = ["# Every analysis on every model: seconds per call", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "| model | input | build s | " + " | ".join(analyses) + " |"]
    lines.append("|---" * (3 + len(analyses)) + "|")
    by_key = {(c.model, c.analysis): c for c in cells}
    for m in models:
        row = [m, f"{MODELS[m].side} px", f"{builds[m]:.1f}" if m in builds else "-"]
        for a in analyses:
            c = by_key[(m, a)]
            if c.seconds is not None:
                row.append(f"{c.seconds:.2f}")
                continue
            text = (
                f"refused: {c.refused}"
                if c.refused
                else f"FAILED: {c.failed}"
                if c.failed
                else f"not run: {c.not_run}"
            )
            n = notes.setdefault(text, len(notes) + 1)
            row.append(f"{text.split(':')[0]} [{n}]")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Columns: " + "; ".join(f"`{a}`: {ANALYSES[a][0]}" for a in analyses) + "."]
    lines += ["", "Models: " + "; ".join(f"`{m}`: {MODELS[m].what}" for m in models) + "."]
    if notes:
        lines += ["", "Notes (refused: the analysis's own one-line refusal, before any work):", ""]
        lines += [f"{n}. {text}" for text, n in notes.items()]
    return "\n".join(lines) + "\n"


def _names(given: str | None, known: dict, what: str) -> list[str]:
    if not given:
        return list(known)
    names = [n.strip() for n in given.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"{what} {unknown} unknown; choose from {', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help=f"comma-separated, of: {', '.join(MODELS)}")
    ap.add_argument("--analyses", help=f"comma-separated, of: {', '.join(ANALYSES)}")
    ap.add_argument("--budget_s", type=float, default=600.0, help="start no cell after this many seconds")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the markdown file to write")
    args = ap.parse_args(argv)
    models, analyses = (
        _names(args.models, MODELS, "model(s)"),
        _names(args.analyses, ANALYSES, "analysis(es)"),
    )
    import timm

    header = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine at start": _machine(),
        "versions": f"python {sys.version.split()[0]}, torch {torch.__version__}, timm {timm.__version__}",
        "data": f"{BATCHES} batches of {BATCH_SIZE} random images, {CLASSES} classes, random weights",
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cells, builds = run_cells(models, analyses, args.budget_s, Path(tmp))
    header["machine at end"] = _machine()
    header["total"] = f"{time.perf_counter() - t0:.0f} s (budget {args.budget_s:.0f} s)"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(cells, builds, header))
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
