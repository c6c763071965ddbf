"""Argument types shared by the command lines: a bad value gives a one-line reason.

Also the checks of output paths that can only run once the options are known
(``--output`` is not used with ``--no-save``): each returns the problem, or None.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
from collections.abc import Callable
from pathlib import Path

#: Widest hidden layer the command line accepts. A 10000-unit layer after a 10000-unit
#: layer is 100 million weights (~1.6 GB in float32 with Adam's two moments and the
#: gradient); much wider and training would fail with an out-of-memory error.
MAX_LAYER_SIZE = 10_000


def _number(kind: type, ok: Callable[[float], bool], requirement: str) -> Callable[[str], float]:
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        # nan and inf parse as floats but make no sense as a rate, a decay or a time
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"{requirement}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "must be at least 1")
non_negative_int = _number(int, lambda v: v >= 0, "must be 0 or more")
positive_float = _number(float, lambda v: v > 0, "must be a positive finite number")
non_negative_float = _number(float, lambda v: v >= 0, "must be a finite number, 0 or more")
fraction = _number(float, lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")


def layer_sizes(text: str) -> list[int]:
    """``"256,128"`` -> ``[256, 128]``; each size in ``1 .. MAX_LAYER_SIZE``, no empty items
    (``128,,64`` or a trailing comma is a typo, not two layers)."""
    parts = [part.strip() for part in text.split(",")]
    if "" in parts:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer sizes like 256,128, got {text!r}, which has "
            "an empty size"
        )
    try:
        sizes = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer sizes like 256,128, got {text!r}"
        ) from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    if max(sizes) > MAX_LAYER_SIZE:
        raise argparse.ArgumentTypeError(
            f"layer sizes must be at most {MAX_LAYER_SIZE} (wider layers need gigabytes of "
            f"memory), got {max(sizes)}"
        )
    return sizes


def _missing_dir_problem(directory: Path) -> str | None:
    """Why files cannot be written in ``directory``, which must exist, or None. The
    command line creates no missing directories: a typo in a path would otherwise
    leave a tree of new directories and the output somewhere unexpected."""
    if not directory.exists():
        missing = directory
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        create = f"mkdir -p {shlex.quote(str(directory))}"
        return f"the directory {missing} does not exist (create it first: {create})"
    if not directory.is_dir():
        return f"{directory} is a file, not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"no permission to write in {directory}"
    return None


def output_file_problem(path: Path, example: str = "model.npz") -> str | None:
    """Why a file cannot be written at ``path``, or None: its directory must exist
    (none is created); ``example`` is the file name suggested when ``path`` is a
    directory."""
    if path.is_dir():
        return f"is a directory; give a file name such as {path / example}"
    return _missing_dir_problem(path.parent)


def output_dir_problem(path: Path) -> str | None:
    """Why files cannot be written into the directory ``path``, or None: ``path``
    itself is created if needed, but its parent must exist."""
    if path.exists() and not path.is_dir():
        return "exists and is not a directory"
    return _missing_dir_problem(path if path.exists() else path.parent)


def input_file_error(path: Path, what: str) -> FileNotFoundError:
    """The error for an input that is not a readable file: missing, or something else."""
    if not path.exists():
        return FileNotFoundError(f"{what} not found: {path}")
    kind = "a directory" if path.is_dir() else "not a regular file"
    return FileNotFoundError(f"{path} is {kind}, not a {what}")
