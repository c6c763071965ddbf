"""Argument types shared by the command lines: a bad value gives a one-line reason.

Also the checks of output paths that can only run once the options are known
(``--output`` is not used with ``--no-save``): each returns the problem, or None.
"""

from __future__ import annotations

import argparse
import math
import os
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
    """``"256,128"`` -> ``[256, 128]``; each size in ``1 .. MAX_LAYER_SIZE``."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer sizes like 256,128, got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    if max(sizes) > MAX_LAYER_SIZE:
        raise argparse.ArgumentTypeError(
            f"layer sizes must be at most {MAX_LAYER_SIZE} (wider layers need gigabytes of "
            f"memory), got {max(sizes)}"
        )
    return sizes


def _creatable_dir_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be written in or created, or None."""
    existing = next((d for d in (directory, *directory.parents) if d.exists()), Path.cwd())
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission to write in {existing}"
    return None


def output_file_problem(path: Path, example: str = "model.npz") -> str | None:
    """Why a file cannot be written at ``path`` (parents created as needed), or None;
    ``example`` is the file name suggested when ``path`` is a directory."""
    if path.is_dir():
        return f"is a directory; give a file name such as {path / example}"
    return _creatable_dir_problem(path.parent)


def output_dir_problem(path: Path) -> str | None:
    """Why files cannot be written into the directory ``path`` (created if needed), or None."""
    if path.exists() and not path.is_dir():
        return "exists and is not a directory"
    return _creatable_dir_problem(path)


def input_file_error(path: Path, what: str) -> FileNotFoundError:
    """The error for an input that is not a readable file: missing, or something else."""
    if not path.exists():
        return FileNotFoundError(f"{what} not found: {path}")
    kind = "a directory" if path.is_dir() else "not a regular file"
    return FileNotFoundError(f"{path} is {kind}, not a {what}")
