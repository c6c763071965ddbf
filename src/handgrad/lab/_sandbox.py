"""The sandbox a lab submission runs in: NumPy and the standard library only.

Both children, the grader's (:mod:`handgrad.lab._runner`) and the checker's
(:mod:`handgrad.lab._checkrunner`), call :func:`confine` first (standard output
to standard error, no core files, an address-space cap, death with the parent,
the orphans of its descendants adopted) and :func:`sandbox` just before
executing the submission: it forgets every module that is neither NumPy nor the
standard library and refuses to import new ones. The import hook
is a rule for honest code, not a wall: what holds against a submission that sets
out to cheat is in "The grader" in ``docs/lab.md``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import sysconfig
from typing import Any, TextIO


def read_source(path: str) -> str:
    """The text of a Python file, decoded as Python decodes it: UTF-8, a UTF-8 byte
    order mark (Windows editors write one) or a ``# -*- coding: ... -*-`` line.

    A file that does not decode raises :class:`SyntaxError` with its line, as
    ``python FILE`` would, so that it is reported as a file that does not parse.
    """
    import importlib.util

    with open(path, "rb") as f:
        raw = f.read()
    try:
        return importlib.util.decode_source(raw)
    except (SyntaxError, UnicodeDecodeError) as exc:
        try:  # which byte: decode_source does not say when it is on line 1 or 2
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            line = raw[: bad.start].count(b"\n") + 1
            msg = f"byte 0x{raw[bad.start]:02x} is not UTF-8 text: save the file as UTF-8"
            raise SyntaxError(msg, (path, line, None, None)) from None
        if isinstance(exc, SyntaxError):  # "unknown encoding: ..."
            raise
        raise SyntaxError(str(exc), (path, 1, None, None)) from None


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _library_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(stdlib, third_party)`` directories of this interpreter and, in a venv, its base."""
    schemes = [
        sysconfig.get_paths(),
        sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix}),
    ]
    stdlib = {_real(s[key]) for s in schemes for key in ("stdlib", "platstdlib") if key in s}
    third = {_real(s[key]) for s in schemes for key in ("purelib", "platlib") if key in s}
    return tuple(sorted(stdlib)), tuple(sorted(third))


STDLIB_DIRS, THIRD_PARTY_DIRS = _library_dirs()


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root + os.sep) for root in roots)


def _from_stdlib(spec: Any) -> bool:
    """True for a built-in or frozen module, or one whose files lie in the standard library.

    ``sys.stdlib_module_names`` misses private modules such as
    ``_sysconfigdata__linux_x86_64-linux-gnu``, so the decision rests on where the
    module comes from; anything in ``site-packages`` (a venv's lies inside
    ``platstdlib``) is third-party.
    """
    origin = getattr(spec, "origin", None)
    if origin in ("built-in", "frozen"):
        return True
    if origin and getattr(spec, "has_location", False):
        places = [origin]
    else:  # a namespace package: its directories
        places = list(getattr(spec, "submodule_search_locations", None) or [])
    if not places:
        return False
    for place in map(_real, places):
        parts = place.split(os.sep)
        if not _under(place, STDLIB_DIRS) or _under(place, THIRD_PARTY_DIRS):
            return False
        if "site-packages" in parts or "dist-packages" in parts:
            return False
    return True


def _allowed_module(name: str, module: Any) -> bool:
    if name.partition(".")[0] == "numpy":
        return True
    spec = getattr(module, "__spec__", None)
    if spec is None:  # made at run time (typing.io, ...): judge by name
        top = name.partition(".")[0]
        return top in sys.stdlib_module_names or top in sys.builtin_module_names
    return _from_stdlib(spec)


_IMPORT_MACHINERY = ("importlib", "_frozen_importlib", "_frozen_importlib_external")


def _requested_by_numpy() -> bool:
    """True when the import statement being served is in NumPy's own code."""
    frame = sys._getframe(2)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if frame.f_code.co_filename != __file__ and name.partition(".")[0] not in _IMPORT_MACHINERY:
            return name == "numpy" or name.startswith("numpy.")
        frame = frame.f_back  # type: ignore[assignment]
    return False


class ImportBlocker:
    """A meta-path finder that refuses any module outside NumPy and the standard library.

    NumPy's own imports pass (``numpy.testing`` may ask for ``psutil``); any other
    module must be built in or come from the standard library's directories.
    """

    def __init__(self) -> None:
        self.blocked: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        top = name.partition(".")[0]
        if top == "numpy" or _requested_by_numpy():
            return None  # the usual finders take it from here
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        if spec is None and top in sys.stdlib_module_names:
            return None  # a standard module this build lacks: the usual ModuleNotFoundError
        if spec is not None and _from_stdlib(spec):
            return spec
        self.blocked.append(top)
        raise ImportError(
            f"import of {name!r} is not allowed in the lab (NumPy and the standard library only)"
        )


def sandbox() -> ImportBlocker:
    """Forget the grader's own modules (``__main__``, handgrad, ...) and block new ones."""
    for name, module in list(sys.modules.items()):
        if not _allowed_module(name, module):
            del sys.modules[name]
    blocker = ImportBlocker()
    sys.meta_path.insert(0, blocker)
    return blocker


def confine(cfg: dict[str, Any]) -> TextIO:
    """Cap this process as ``cfg`` says; return the private result pipe to write to.

    File descriptor 1 then points at standard error, so whatever the submission
    prints never reaches the parent as a result. On Linux this process is killed
    when the parent dies, even by SIGKILL (``PR_SET_PDEATHSIG``), and adopts the orphans
    of its descendants (``PR_SET_CHILD_SUBREAPER``), so that the parent still counts them.
    """
    from handgrad.lab._isolate import adopt_orphans, die_with_parent

    if "parent_pid" in cfg:
        die_with_parent(int(cfg["parent_pid"]))
    adopt_orphans()
    out = os.fdopen(int(cfg["result_fd"]), "w")
    os.set_inheritable(out.fileno(), False)
    sys.stdout.flush()
    os.dup2(2, 1)  # whatever the submission writes to fd 1 goes to stderr, not to the parent
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core files from a crash
    limit = int(cfg["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return out


def emit(out: TextIO, **record: Any) -> None:
    """One JSON line on the result pipe."""
    out.write(json.dumps(record) + "\n")
    out.flush()
