"""Loading a learner's lab file and calling its methods, for the checker's child.

Whatever goes wrong in the learner's code becomes a :class:`Stop` holding one
finding that names the file, the method and the line, never a traceback.
"""

from __future__ import annotations

import ast
import re
import traceback
import types
from typing import Any

from handgrad.lab._sandbox import ImportBlocker, read_source
from handgrad.lab.findings import Finding, bug

_SHAPES = re.compile(r"mismatch in its core dimension|not aligned|shapes? \(")
_BROADCAST = re.compile(r"could not be broadcast|non-broadcastable|broadcast")
_REDUCTION = re.compile(r"\b(sum|mean)\b|\bb[12]\b|bias")


class OutOfTime(BaseException):
    """Raised in the learner's code when the check's time is up (not an ``Exception``,
    so that ``except Exception`` in the learner's code cannot swallow it)."""


class Stop(Exception):
    """The learner's code failed; ``finding`` says where and why, in one line.

    ``final``: nothing more can be checked (the time is up).
    """

    def __init__(self, finding: Finding, final: bool = False) -> None:
        super().__init__(finding.text)
        self.finding, self.final = finding, final


class Learner:
    """A learner's file: its class, and calls into it that turn failures into findings.

    ``path`` is the file as compiled (tracebacks name it); ``shown`` is how the
    report names it.
    """

    def __init__(self, path: str, shown: str, time_limit: float = 30.0) -> None:
        self.path, self.shown, self.time_limit = path, shown, time_limit

    def load(self, blocker: ImportBlocker) -> type:
        try:
            code = compile(read_source(self.path), self.path, "exec")
        except SyntaxError as exc:
            where = f"{self.shown}:{exc.lineno}" if exc.lineno else self.shown
            text = f"{where}: does not parse: {exc.msg}"
            raise Stop(bug("file", "syntax", text, "fix the line, as Python reports it")) from None
        module = types.ModuleType("submission")
        module.__file__ = self.path
        try:
            exec(code, module.__dict__)
        except ImportError as exc:
            if blocker.blocked:
                text = (
                    f"{self.shown}: imports {blocker.blocked[-1]!r}, which the lab does not allow"
                )
                fix = "use NumPy and the standard library only"
                raise Stop(bug("file", "import", text, fix)) from None
            raise Stop(self._failure(exc, "import")) from None
        except BaseException as exc:
            raise Stop(self._failure(exc, "import"), isinstance(exc, OutOfTime)) from None
        cls = module.__dict__.get("NeuralNetwork")
        if not isinstance(cls, type):
            text = f"{self.shown}: defines no class NeuralNetwork"
            fix = "the grader imports a class named NeuralNetwork; 'handgrad lab start' writes one"
            raise Stop(bug("file", "no-class", text, fix))
        return cls

    def newer_syntax(self) -> str | None:
        """Where the file uses syntax Python 3.8 (the lab's oldest) cannot parse, or None."""
        try:
            ast.parse(read_source(self.path), self.path, feature_version=(3, 8))
        except SyntaxError as exc:
            where = f"{self.shown}:{exc.lineno}" if exc.lineno else self.shown
            return f"{where}: {exc.msg}"
        return None

    def call(self, method: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)``; a :class:`Stop` naming the method and the line if it fails."""
        try:
            return fn(*args)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, MemoryError)):
                raise
            raise Stop(self._failure(exc, method), isinstance(exc, OutOfTime)) from None

    def _failure(self, exc: BaseException, method: str) -> Finding:
        """One line for an exception from the learner's code: where, what, and a fix."""
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == self.path]
        line, source = None, ""
        if frames:
            last = frames[-1]
            line, source = last.lineno, (last.line or "").strip()
            method = method if last.name == "<module>" else last.name
        where = f"{self.shown}:{line}" if line else self.shown
        what = " ".join(str(exc).split())
        who = "importing the file" if method == "import" else method
        if isinstance(exc, NotImplementedError):
            text = f"{where}: {method} is not implemented yet" + (f": {what}" if what else "")
            return bug(method, "not-implemented", text, f"write {method}, then check again")
        if isinstance(exc, OutOfTime):
            text = (
                f"{where}: {who} was still running when the check's {self.time_limit:g} s ran out"
            )
            fix = "an endless loop? Each method should take well under a second on 16 images"
            return bug(method, "time-limit", text, fix)
        if isinstance(exc, SystemExit):
            text = f"{where}: {who} called sys.exit({exc.code!r})"
            return bug(method, "exception", text, "return a value instead of exiting")
        text = f"{where}: {who} raised {type(exc).__name__}" + (f": {what}" if what else "")
        code, fix = "exception", f"look at line {line}: {source}" if source else ""
        if isinstance(exc, TypeError) and not frames and "required" in what:
            # raised by the call itself, not inside the learner's code: a signature
            fix = (
                f"the grader calls {method} as the lab's contract does: give every extra "
                "argument a default ('handgrad lab start' writes the signatures)"
            )
        if isinstance(exc, ValueError) and _SHAPES.search(what) and not _BROADCAST.search(what):
            code = "transpose"
            fix = (
                f"'{source}': a product's inner sizes must agree: a missing or misplaced "
                "transpose? dW = input^T @ dout, dinput = dout @ W^T"
            )
        elif isinstance(exc, ValueError) and _BROADCAST.search(what):
            if _REDUCTION.search(source):
                code = "bias-axis"
                fix = (
                    f"'{source}': a gradient summed over the wrong axis? db = dout.sum(axis=0) "
                    "sums over the batch and has the bias's shape"
                )
            else:
                code = "transpose"
                fix = (
                    f"'{source}': the shapes do not fit: a missing or misplaced transpose? "
                    "Each gradient has its parameter's shape"
                )
        return bug(method, code, text, fix)
