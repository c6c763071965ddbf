"""What ``handgrad lab check`` reports: one :class:`Finding` per thing it looked at."""

from __future__ import annotations

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

    def lines(self) -> list[str]:
        """The report's lines for this finding: the finding, then its fix (never wrapped)."""
        head = f"  {MARKS.get(self.status, self.status):<5} {self.topic:<15} {self.text}"
        return [head] + ([f"{'':24}fix: {self.fix}"] if self.fix else [])


def bug(topic: str, code: str, text: str, fix: str) -> Finding:
    return Finding("bug", topic, text, fix, code)


def ok(topic: str, text: str) -> Finding:
    return Finding("ok", topic, text)


def note(topic: str, text: str) -> Finding:
    return Finding("note", topic, text)
