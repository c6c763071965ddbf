"""What ``handgrad lab check`` reports: one :class:`Finding` per thing it looked at."""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass
from typing import Any

#: How a finding reads in the report's first column.
MARKS = {"ok": "ok", "bug": "BUG", "note": "note", "skipped": "--"}


@dataclass(frozen=True)
class Finding:
    """One line of the check's report, and the line of advice that goes with a bug.

    ``status`` is ``"ok"``, ``"bug"``, ``"note"`` (something to know, not a bug) or
    ``"skipped"``; ``code`` names a bug for tests and tools (``"relu-derivative"``,
    ``"not-averaged"``, ...); ``topic`` is what was looked at (``"gradients"``).
    """

    status: str
    topic: str
    text: str
    fix: str = ""
    code: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Finding:
        return cls(
            **{k: str(record.get(k, "")) for k in ("status", "topic", "text", "fix", "code")}
        )

    def lines(self, width: int = 80) -> list[str]:
        """The report's lines for this finding, then its fix, wrapped to ``width`` columns
        (a word longer than a line, such as a path, is left whole)."""
        head = f"  {MARKS.get(self.status, self.status):<5} {self.topic:<15} "
        lines = _wrap(self.text, head, " " * len(head), width)
        if self.fix:
            lines += _wrap(self.fix, " " * len(head) + "fix: ", " " * (len(head) + 5), width)
        return lines


def _wrap(text: str, first: str, rest: str, width: int) -> list[str]:
    return textwrap.wrap(
        text,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [first.rstrip()]


def bug(topic: str, code: str, text: str, fix: str) -> Finding:
    return Finding("bug", topic, text, fix, code)


def ok(topic: str, text: str) -> Finding:
    return Finding("ok", topic, text)


def note(topic: str, text: str) -> Finding:
    return Finding("note", topic, text)
