"""What the benchmark scripts share: thread pinning, alternating rounds, the tables.

``pin_threads(n)`` must run before NumPy or PyTorch is imported: BLAS libraries
read their thread count from the environment when they load.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

TIMING_HEAD = (
    "contender",
    "median epoch",
    "fastest",
    "slowest",
    "all epochs",
    "vs handgrad",
    "test accuracy",
)


def add_common_arguments(p: argparse.ArgumentParser, rounds: int, threads_help: str) -> None:
    """The options every benchmark script takes."""
    p.add_argument(
        "--rounds", type=int, default=rounds, help=f"epochs per contender (default: {rounds})"
    )
    p.add_argument("--threads", type=int, default=2, help=f"{threads_help} (default: 2)")
    p.add_argument("--batch-size", type=int, default=128, help="samples per step (default: 128)")
    p.add_argument(
        "--train-size", type=int, default=60000, help="training images used (default: all 60,000)"
    )
    p.add_argument("--markdown", action="store_true", help="also print Markdown tables")


def make_contenders(factories: dict[str, Callable[..., Any]], *data: Any) -> dict[str, Any]:
    """``factory(*data)`` for each contender; one whose package is missing is skipped,
    and said so on stderr."""
    made = {}
    for name, make in factories.items():
        try:
            made[name] = make(*data)
        except ImportError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
    return made


def pin_threads(n: int) -> None:
    """Tell every BLAS / OpenMP library to start ``n`` threads (before importing them)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def alternate(contenders: dict[str, Callable[[int], None]], rounds: int) -> dict[str, list[float]]:
    """Seconds of ``run(round)`` per contender and round. The contenders alternate
    within every round (forward order in even rounds, reverse in odd ones), so slow
    and fast moments of a noisy machine fall on all of them."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(rounds):
        names = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in names:
            t0 = time.perf_counter()
            contenders[name](r)
            times[name].append(time.perf_counter() - t0)
    return times


def timing_row(name: str, ts: Sequence[float], base: float) -> list[str]:
    """Median, fastest, slowest, total and ratio to ``base`` of a contender's times."""
    med = statistics.median(ts)
    return [
        name,
        f"{med:.3f} s",
        f"{min(ts):.3f} s",
        f"{max(ts):.3f} s",
        f"{sum(ts):.2f} s",
        f"{med / base:.2f}x",
    ]


def print_table(head: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> None:
    """An aligned text table, and the same as Markdown when asked."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    if markdown:
        print()
        print("| " + " | ".join(head) + " |")
        print("| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |")
        for row in rows:
            print("| " + " | ".join(row) + " |")


def versions() -> str:
    """Python, NumPy and whichever of torch / scikit-learn were imported."""
    import numpy as np

    found = [f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    for module in ("torch", "sklearn"):
        mod = sys.modules.get(module)
        if mod is not None:
            found.append(f"{module} {mod.__version__}")
    return ", ".join(found)
