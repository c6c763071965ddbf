"""Argument types shared by the command lines: a bad value gives a one-line reason."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(kind: type, ok: Callable[[float], bool], requirement: str) -> Callable[[str], float]:
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{requirement}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "must be at least 1")
positive_float = _number(float, lambda v: v > 0, "must be positive")
fraction = _number(float, lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")


def layer_sizes(text: str) -> list[int]:
    """``"256,128"`` -> ``[256, 128]``."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer sizes like 256,128, got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return sizes
