"""What every study shares: its context (seed, quick, output folder, progress), its
report (tables, figures, findings, the numbers tests assert) and the Markdown file."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

from handgrad._atomic import atomic_write
from handgrad.plots import _pyplot as pyplot  # headless; the command checks matplotlib first

__all__ = ["Context", "Report", "Table", "pyplot", "write_report"]

T = TypeVar("T")
# A cell that is a number, perhaps with a unit: "98.2%", "1.5e-06", "12.3 s", "2.1x", "-".
NUMBER = re.compile(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?( ?(%|s|ms|x|MB|min|images/s))?|-")


@dataclass(frozen=True)
class Table:
    """A table: a header and rows of already formatted cells; ``caption`` above it."""

    head: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.head):
                raise ValueError(
                    f"table row {list(row)} has {len(row)} cells, head {len(self.head)}"
                )

    def numeric(self) -> list[bool]:
        """Which columns hold numbers (right-aligned): every cell starts like one."""
        return [
            i > 0 and all(NUMBER.fullmatch(row[i]) for row in self.rows)
            for i in range(len(self.head))
        ]

    def text(self) -> str:
        """Aligned plain text: numbers right, words left."""
        cells = [list(self.head), *[list(r) for r in self.rows]]
        widths = [max(len(c[i]) for c in cells) for i in range(len(self.head))]
        right = self.numeric()
        lines = [self.caption] if self.caption else []
        for row in cells:
            parts = [
                c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
            ]
            lines.append("  ".join(parts).rstrip())
        return "\n".join(lines)

    def markdown(self) -> str:
        align = ["---:" if r else "---" for r in self.numeric()]
        lines = [f"{self.caption}\n"] if self.caption else []
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in self.head) + " |")
        lines.append("| " + " | ".join(align) + " |")
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in self.rows]
        return "\n".join(lines)


@dataclass
class Report:
    """What a study found: tables, figures, sentences, and the raw numbers behind them.

    ``numbers`` holds the values the tables were formatted from (accuracies,
    times, flags), so tests assert numbers rather than parse text.
    """

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def text(self) -> str:
        parts = [self.title, ""]
        for table in self.tables:
            parts += [table.text(), ""]
        parts += [f"- {line}" for line in self.findings]
        return "\n".join(parts).rstrip() + "\n"

    def markdown(self, command: str) -> str:
        parts = [f"# {self.title}", "", f"`{command}` ({self.seconds:.1f} s)", ""]
        for table in self.tables:
            parts += [table.markdown(), ""]
        parts += [f"- {line}" for line in self.findings]
        if self.findings:
            parts.append("")
        parts += [f"![{p.stem}]({p.name})\n" for p in self.figures]
        return "\n".join(parts).rstrip() + "\n"


class Context:
    """A study's run: its seed and generator, quick or full, where figures go, progress.

    Parameters
    ----------
    seed : int
        Everything random in the study comes from ``numpy.random.default_rng(seed)``
        or generators spawned from it: the same seed gives the same table, bit for bit.
    quick : bool
        The reduced run (seconds) instead of the full one (minutes).
    out : Path
        Folder for the figures and the report.
    stream : file, optional
        Where progress goes (stderr by default); progress bars only on a terminal.
    """

    def __init__(
        self,
        seed: int = 0,
        quick: bool = False,
        out: Path | str = ".",
        stream: IO[str] | None = None,
    ) -> None:
        self.seed = int(seed)
        self.quick = bool(quick)
        self.out = Path(out)
        self.stream = stream if stream is not None else sys.stderr
        self._children = np.random.SeedSequence(self.seed)

    def rng(self) -> np.random.Generator:
        """A fresh generator, independent of the others, in a fixed order from ``seed``."""
        return np.random.default_rng(self._children.spawn(1)[0])

    def pick(self, quick: T, full: T) -> T:
        """``quick`` in a quick run, ``full`` otherwise."""
        return quick if self.quick else full

    def figure(self, name: str) -> Path:
        """The path of the figure ``name`` (a PNG in the output folder)."""
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / f"{name}.png"

    def progress(self, items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
        """Iterate with a progress bar on a terminal (tqdm if installed), and a line
        ``desc: done in 12.3 s`` at the end."""
        start = time.perf_counter()
        bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm

                bar = tqdm(items, desc=desc, total=total, leave=False, file=self.stream)
            except ImportError:
                pass
        yield from bar if bar is not None else items
        print(f"{desc}: done in {time.perf_counter() - start:.1f} s", file=self.stream, flush=True)


def write_report(report: Report, out: Path, command: str) -> Path:
    """Write ``report.md`` into ``out`` atomically; return its path."""
    out.mkdir(parents=True, exist_ok=True)
    text = report.markdown(command)
    return atomic_write(out / "report.md", lambda fh: fh.write(text.encode("utf-8")))
