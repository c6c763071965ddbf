"""``handgrad lab check``: name the classic bugs in a learner's lab file, in seconds.

The file runs in a child process (:mod:`handgrad.lab._checkrunner`) under the
grader's import rules and limits (:mod:`handgrad.lab._sandbox`): NumPy and the
standard library only, its address space capped, its processes killed past the
time limit. Unlike the grader's child it is never isolated, not even as root: it
runs as the caller, a guard against honest mistakes, not against hostile code.
The child drives ``NeuralNetwork`` on a batch of 16 random images and reports
what it found, one :class:`~handgrad.lab.findings.Finding` per line; this
process prints them. What the check can and cannot conclude is in ``docs/lab.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from handgrad._argtypes import input_file_error
from handgrad._threads import BLAS_ENV
from handgrad.lab._child import crash_reason, run_child
from handgrad.lab.findings import Finding, bug

#: The check's matrices are small: BLAS threads would only wait for each other (a
#: second thread made it 40x slower on a busy 2-core machine).
_ONE_THREAD = {name: "1" for name in BLAS_ENV}


@dataclass
class CheckResult:
    """Every finding, in order; ``clean`` when none is a bug."""

    path: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def bugs(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "bug"]

    @property
    def clean(self) -> bool:
        return bool(self.findings) and not self.bugs

    def report(self) -> str:
        """The report as ``handgrad lab check`` prints it."""
        lines = [f"checking {self.path}"]
        for finding in self.findings:
            lines += finding.lines()
        count = len(self.bugs)
        if count == 0:
            lines.append(f"no bugs found. Next: handgrad lab grade {self.path}")
        else:
            lines.append(
                f"{count} problem{'s' if count > 1 else ''} found: fix the first, then check again"
            )
        return "\n".join(lines)


def check(
    path: str | Path, *, time_limit: float = 30.0, memory_mb: int = 2048, shown: str | None = None
) -> CheckResult:
    """Check the lab file at ``path``; ``shown`` is how the report names it (default: ``path``).

    Raises FileNotFoundError when there is no file and ValueError for limits that
    make no sense; everything wrong with the file is a finding.
    """
    target = Path(path)
    if not target.is_file():
        raise input_file_error(target, "lab file")
    for name, value in {"time_limit": time_limit, "memory_mb": memory_mb}.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive, got {value}")
    result = CheckResult(path=shown or str(path))
    done = []

    def take(line: bytes) -> None:
        try:
            record = json.loads(line)
            if record.get("event") == "finding":
                result.findings.append(Finding.from_json(record))
            elif record.get("event") == "done":
                done.append(True)
        except (ValueError, TypeError, AttributeError):
            pass  # not ours: the report is what the checker sent

    cfg = {
        "path": str(target.resolve()),
        "shown": result.path,
        "memory_mb": int(memory_mb),
        "time_limit": float(time_limit),
    }
    end = run_child("handgrad.lab._checkrunner", cfg, time_limit, take, env=_ONE_THREAD)
    if end.timed_out:
        text = f"{result.path}: the check ran past its time limit of {time_limit:g} s"
        fix = "an endless loop? Each method should take well under a second on 16 images"
        result.findings.append(bug("file", "time-limit", text, fix))
    elif not done:
        reason = crash_reason(end, memory_mb).replace("grading process", "check")
        text = f"{result.path}: " + reason.replace("submission ", "the file ")
        result.findings.append(bug("file", "crash", text, ""))
    return result
