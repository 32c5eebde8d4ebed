"""One benchmark table: rows of side-by-side ratios, the machine they ran on, a verdict per goal.

Every figure is a ratio ``ours / baseline`` measured in the same run (interleaved repetitions where
timing), reported as the median and the min-max spread over the repetitions. A row whose method
missed its accuracy target is reported as missed and not scored.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

__all__ = ["Row", "Clock", "machine_description", "machine_slug", "render", "write_results", "interleaved"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One figure of the table.

    ratios: one ``ours / baseline`` per repetition (empty when there is nothing to score).
    goal: the ratio to stay at or below (``better="lower"``) or at or above (``better="higher"``).
    missed: why the figure is not scored (a method that never reached the accuracy target).
    """

    section: str
    figure: str
    ours: str
    baseline: str
    ratios: list[float] = field(default_factory=list)
    goal: float | None = None
    better: Literal["lower", "higher"] = "lower"
    missed: str = ""
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.ratios) if self.ratios else float("nan")

    @property
    def status(self) -> str:
        if self.missed:
            return f"missed: {self.missed}"
        if self.goal is None or not self.ratios:
            return "-"
        ok = self.median <= self.goal if self.better == "lower" else self.median >= self.goal
        return "met" if ok else "not met"

    @property
    def goal_text(self) -> str:
        if self.goal is None:
            return "-"
        return f"{'<=' if self.better == 'lower' else '>='} {self.goal:g}x"

    def cells(self) -> list[str]:
        if self.ratios:
            ratio = f"{self.median:.3f}x"
            spread = f"{min(self.ratios):.3f}-{max(self.ratios):.3f}" if len(self.ratios) > 1 else "-"
        else:
            ratio, spread = "-", "-"
        n = str(len(self.ratios)) if self.ratios else "-"
        return [
            self.section,
            self.figure,
            self.ours,
            self.baseline,
            ratio,
            spread,
            n,
            self.goal_text,
            self.status,
        ]


class Clock:
    """Seconds of one timed region: process CPU time (``kind="cpu"``: stable on a shared machine when
    torch runs one thread), wall time (``"wall"``), or wall time after a CUDA synchronise (``"cuda"``)."""

    def __init__(self, kind: Literal["cpu", "wall", "cuda"] = "cpu") -> None:
        self.kind = kind
        self.seconds = 0.0

    def now(self) -> float:
        """The clock's current reading (seconds)."""
        if self.kind == "cuda":
            torch.cuda.synchronize()
        return time.process_time() if self.kind == "cpu" else time.perf_counter()

    def __enter__(self) -> Clock:
        self._start = self.now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = self.now() - self._start


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, clock: Literal["cpu", "wall", "cuda"] = "cpu"
) -> dict[str, list[float]]:
    """Seconds per repetition of each function, run in turn (order reversed every other repetition),
    so a change in the machine's load hits all alike. Each runs once untimed first (warm-up)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for rep in range(repeats):
        for key in keys[::-1] if rep % 2 else keys:
            with Clock(clock) as c:
                fns[key]()
            times[key].append(c.seconds)
    return times


def ratios(ours: Sequence[float], base: Sequence[float]) -> list[float]:
    """Per-repetition ratios of two interleaved timings."""
    return [a / b for a, b in zip(ours, base)]


def machine_description() -> dict[str, str]:
    """What the numbers ran on: CPU model and cores, load, torch and its threads, GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"model name\s*:\s*(.+)", text)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    desc = {
        "host": platform.node(),
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "load average (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": f"{torch.__version__}, {torch.get_num_threads()} intra-op thread(s)",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    return desc


def machine_slug() -> str:
    """A file-name-safe short name of the machine: the GPU's, else the host's."""
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{platform.node()}-cpu"
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "machine"


def render(rows: Sequence[Row], title: str, settings: str = "", machine: dict[str, str] | None = None) -> str:
    """The markdown document: title, machine (as described now unless given), settings, the table, one
    line per goal, the rows' notes."""
    head = [
        "Section",
        "Figure",
        "Ours",
        "Baseline",
        "Ratio (median)",
        "Spread (min-max)",
        "n",
        "Goal",
        "Status",
    ]
    lines = [f"# {title}", "", f"Run {dt.datetime.now().isoformat(timespec='seconds')}.", ""]
    lines += [f"- {k}: {v}" for k, v in (machine or machine_description()).items()]
    if settings:
        lines += ["", settings]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r.cells()) + " |" for r in rows]
    goals = [r for r in rows if r.goal is not None or r.missed]
    if goals:
        lines += ["", "## Goals", ""]
        for r in goals:
            value = f" ({r.median:.3f}x)" if r.ratios else ""
            lines.append(f"- {r.section}: {r.figure}, goal {r.goal_text}: {r.status}{value}")
    notes = [r for r in rows if r.note]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {r.section}, {r.figure}: {r.note}" for r in notes]
    return "\n".join(lines) + "\n"


def write_results(text: str, directory: Path = RESULTS_DIR, suffix: str = "") -> Path:
    """Write the document to ``<directory>/<date>-<machine><suffix>.md`` atomically; returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dt.date.today().isoformat()}-{machine_slug()}{suffix}.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
