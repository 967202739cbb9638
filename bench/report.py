"""Turning benchmark samples into docs/benchmarks.md and docs/benchmarks-throughput.png.

Theory of operation
-------------------
Every measurement is a `Sample`: the case, its parameters (mode, clients...), the path
(`direct`, `pgbouncer`, `wardgate`, `wardgate-normal`), the round, and a dict of
metrics. `summarize` groups samples by (case, params, path) and keeps the median, min
and max of each metric. Ratios are taken between medians of the same run (wardgate over
direct, wardgate over PgBouncer), never against figures from another run. The Markdown
writers here know nothing about how the figures were produced.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Sample", "Stat", "summarize", "fmt_stat", "table", "plot_throughput"]


@dataclass
class Sample:
    case: str
    params: tuple
    target: str
    round: int
    metrics: dict[str, float]


@dataclass
class Stat:
    median: float
    lo: float
    hi: float
    n: int
    values: list[float] = field(default_factory=list)


def summarize(samples: list[Sample]) -> dict[tuple, dict[str, Stat]]:
    """(case, params, target) -> metric -> Stat."""
    grouped: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        for k, v in s.metrics.items():
            if v is not None:
                grouped[(s.case, s.params, s.target)][k].append(float(v))
    out: dict[tuple, dict[str, Stat]] = {}
    for key, metrics in grouped.items():
        out[key] = {
            k: Stat(statistics.median(vs), min(vs), max(vs), len(vs), vs)
            for k, vs in metrics.items()
        }
    return out


def _num(v: float, digits: int = 0) -> str:
    if v != v:  # NaN
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def fmt_stat(s: Stat | None, digits: int = 0) -> str:
    if s is None:
        return "-"
    if s.n == 1:
        return _num(s.median, digits)
    return f"{_num(s.median, digits)} ({_num(s.lo, digits)}-{_num(s.hi, digits)})"


def ratio(a: Stat | None, b: Stat | None) -> float | None:
    if a is None or b is None or not b.median:
        return None
    return a.median / b.median


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_throughput(
    path: Path,
    series: dict[str, dict[int, float]],
    title: str,
    ylabel: str,
    targets: tuple[float, ...] = (),
) -> bool:
    """One line per series: client count -> ratio. Returns False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, points in series.items():
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", label=name)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    for t in targets:
        ax.axhline(t, color="firebrick", linewidth=0.8, linestyle="--", alpha=0.6)
    ax.set_xscale("log", base=2)
    xticks = sorted({x for p in series.values() for x in p})
    ax.set_xticks(xticks)
    ax.set_xticklabels([str(x) for x in xticks])
    ax.set_xlabel("pgbench clients")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
