"""The one place that turns ``rng=`` arguments into ``numpy.random.Generator`` objects."""

from __future__ import annotations

import numpy as np


def check_generator(rng: object, where: str) -> np.random.Generator:
    """Return ``rng`` if it is a Generator, else raise a ``TypeError`` naming ``where``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{where} needs rng=numpy.random.Generator (e.g. np.random.default_rng(0)), "
            f"got {type(rng).__name__}"
        )
    return rng


def as_generator(rng: np.random.Generator | int | None, where: str = "rng") -> np.random.Generator:
    """A Generator as given, or a new one seeded with the int (fresh entropy for None)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(
        f"{where} must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}"
    )
