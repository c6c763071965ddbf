from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

# Tolerances for comparing with PyTorch, per dtype. float64 differences come only
# from summation order; float32 from that plus single-precision rounding.
TOLERANCES: dict[type, dict[str, float]] = {
    np.float64: {"rtol": 1e-9, "atol": 1e-11},
    np.float32: {"rtol": 2e-5, "atol": 2e-6},
}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block with the process umask set to ``mask``."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)
