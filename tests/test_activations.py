"""Activation specifics: the hand-written erf, argument errors, Softmax's axis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from handgrad.nn import GELU, LogSoftmax, ReLU, Softmax
from handgrad.nn.functional import erf


def test_erf_matches_math_erf() -> None:
    x = np.concatenate(
        [
            np.linspace(-7, 7, 20001),
            np.logspace(-300, 1, 500),
            -np.logspace(-20, 1.5, 500),
            [0.0, -0.0, 40.0, -40.0],
        ]
    )
    expected = np.array([math.erf(v) for v in x])
    got = erf(x)
    assert np.max(np.abs(got - expected)) < 2e-15
    tiny = np.abs(x) < 1e-3  # relative accuracy near 0 too (erf(x) ~ 2x/sqrt(pi))
    np.testing.assert_allclose(got[tiny], expected[tiny], rtol=1e-14)
    assert erf(np.float32(0.5) * np.ones(3, np.float32)).dtype == np.float32


def test_gelu_rejects_unknown_approximation() -> None:
    with pytest.raises(ValueError, match="'none' or 'tanh'"):
        GELU(approximate="fast")


@pytest.mark.parametrize("cls", [Softmax, LogSoftmax])
def test_softmax_axis_out_of_range_is_named(cls: type) -> None:
    with pytest.raises(ValueError, match=r"dim=2.*got shape \(3, 4\)"):
        cls(dim=2)(np.zeros((3, 4)))


def test_softmax_along_dim_0_normalises_columns() -> None:
    p = Softmax(dim=0)(np.random.default_rng(0).standard_normal((3, 4)))
    np.testing.assert_allclose(p.sum(axis=0), 1.0)


def test_wrong_dout_shape_and_dtype_errors() -> None:
    relu = ReLU()
    relu(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"dout of shape \(2, 3\)"):
        relu.backward(np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match="floating-point array"):
        relu(np.ones((2, 3), np.int32))
