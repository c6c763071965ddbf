"""Setting NumPy's BLAS thread count at run time (the command line's --threads)."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad._blas import blas_threads, set_blas_threads


def test_set_blas_threads_round_trip() -> None:
    before = blas_threads()
    if before is None:
        assert set_blas_threads(1) is False
        pytest.skip("NumPy's BLAS here is not an OpenBLAS that can be told")
    try:
        assert set_blas_threads(1) is True
        assert blas_threads() == 1
        a = np.random.default_rng(0).standard_normal((300, 300))
        np.testing.assert_allclose(a @ np.eye(300), a)  # BLAS still works
    finally:
        set_blas_threads(before)
    assert blas_threads() == before


def test_set_blas_threads_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        set_blas_threads(0)
