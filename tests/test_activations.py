"""Activation specifics: the hand-written erf, properties (hypothesis), argument errors.

Gradients and PyTorch parity run from ``tests/cases/activations.py``; this file
checks what those cannot: invariants over arbitrary shapes and values, extreme
inputs, exact identities and the error messages.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from handgrad.nn import (
    ELU,
    GELU,
    SELU,
    LeakyReLU,
    LogSoftmax,
    Module,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from handgrad.nn import functional as F
from handgrad.nn.functional import erf, log_softmax, sigmoid, softmax

DTYPES = [np.float32, np.float64]
ACTIVATIONS: list[tuple[str, Callable[[], Module]]] = [
    ("ReLU", ReLU),
    ("LeakyReLU", lambda: LeakyReLU(0.2)),
    ("ELU", ELU),
    ("SELU", SELU),
    ("GELU", GELU),
    ("GELU-tanh", lambda: GELU(approximate="tanh")),
    ("SiLU", SiLU),
    ("Sigmoid", Sigmoid),
    ("Tanh", Tanh),
    ("Softmax", Softmax),
    ("Softmax-dim0", lambda: Softmax(dim=0)),
    ("LogSoftmax", LogSoftmax),
    ("LogSoftmax-dim0", lambda: LogSoftmax(dim=0)),
]
ELEMENTWISE = [(n, m) for n, m in ACTIVATIONS if "Softmax" not in n]
IDS = [n for n, _ in ACTIVATIONS]


# Underflow to zero is the correctly rounded answer (exp(-1e4) = 0) and NumPy ignores
# it by default; overflow, invalid operations (inf - inf, 0 * inf) and division by
# zero are the failures a naive formula would show.
LOUD = {"over": "raise", "invalid": "raise", "divide": "raise"}


# -- erf ---------------------------------------------------------------------------------


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


def test_erf_is_within_an_ulp_over_a_wide_grid() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            np.linspace(-6.5, 6.5, 52001),  # every centre of the table and between
            rng.uniform(-8, 8, 20000),
            np.geomspace(1e-300, 1e-2, 600),  # tiny: erf(x) ~ 2x / sqrt(pi)
            -np.geomspace(1e-300, 1e300, 600),  # negative, up to huge
            np.geomspace(5.8, 1e300, 200),  # where erf rounds to 1
        ]
    )
    expected = np.array([math.erf(v) for v in x])
    got = erf(x)
    assert got.dtype == np.float64 and got.shape == x.shape
    assert np.max(np.abs(got - expected)) <= 2.3e-16  # one ulp of 1
    nonzero = expected != 0
    rel = np.abs(got - expected)[nonzero] / np.abs(expected[nonzero])
    assert rel.max() < 1e-15
    np.testing.assert_array_equal(erf(-x), -got)  # odd, exactly


def test_erf_special_values_dtypes_and_shapes() -> None:
    special = erf(np.array([np.inf, -np.inf, np.nan, 0.0, -0.0]))
    np.testing.assert_array_equal(special[:2], [1.0, -1.0])
    assert np.isnan(special[2]) and special[3] == 0 and np.signbit(special[4])
    ints = erf(np.arange(-3, 4))
    assert ints.dtype == np.float64
    np.testing.assert_allclose(ints, [math.erf(v) for v in range(-3, 4)], rtol=1e-15)
    scalar = erf(np.float64(0.5))
    assert isinstance(scalar, np.ndarray) and scalar.shape == ()
    assert erf(np.zeros((2, 0, 3))).shape == (2, 0, 3)
    assert erf(np.ones(3, np.float16)).dtype == np.float16
    x = np.ones((4, 6))[:, ::2]  # not contiguous, and not to be touched
    before = x.copy()
    np.testing.assert_allclose(erf(x), math.erf(1.0), rtol=1e-15)
    np.testing.assert_array_equal(x, before)


def test_erf_float32_is_computed_in_float32_to_about_an_ulp() -> None:
    x = np.concatenate([np.linspace(-6, 6, 30001), np.geomspace(1e-37, 1, 300)]).astype(np.float32)
    expected = np.array([math.erf(float(v)) for v in x])
    got = erf(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=3e-7, atol=1e-7)


def test_gelu_matches_its_formulas() -> None:
    x = np.linspace(-8, 8, 321)
    exact = [v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x]  # erfc: no cancellation
    # 1 + erf(x / sqrt(2)) cancels for x < 0 (as in PyTorch): an absolute error of
    # about |x| * 1e-16 is what that formula can do
    np.testing.assert_allclose(GELU()(x), exact, rtol=1e-14, atol=1e-15)
    c = math.sqrt(2 / math.pi)
    tanh_form = [0.5 * v * (1 + math.tanh(c * (v + 0.044715 * v**3))) for v in x]
    np.testing.assert_allclose(GELU("tanh")(x), tanh_form, rtol=1e-14, atol=1e-15)


def test_gelu_backward_reuses_the_forward_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = F.erf

    def counting_erf(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape)
        return original(x)

    monkeypatch.setattr(F, "erf", counting_erf)
    gelu = GELU()
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    gelu.forward(x)
    gelu.backward(np.ones_like(x))
    assert calls == [(3, 4)]  # erf is the expensive part: once per step, not twice


# -- properties over arbitrary shapes and values ---------------------------------------------


moderate = st.floats(min_value=-30, max_value=30, allow_nan=False, width=32)


@pytest.mark.parametrize(("name", "make"), ACTIVATIONS, ids=IDS)
@settings(max_examples=15, deadline=None)
@given(
    x=arrays(
        st.sampled_from(DTYPES),
        array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
        elements=moderate,
    ),
    seed=st.integers(0, 2**16),
)
def test_shape_dtype_and_untouched_inputs(
    name: str, make: Callable[[], Module], x: np.ndarray, seed: int
) -> None:
    module = make()
    x_copy = x.copy()
    x.flags.writeable = False  # any write into x raises, not only a lasting change
    out = module.forward(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert np.all(np.isfinite(out))
    dout = np.random.default_rng(seed).standard_normal(x.shape).astype(x.dtype)
    dout_copy = dout.copy()
    dout.flags.writeable = False
    dx = module.backward(dout)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert np.all(np.isfinite(dx))
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(dout, dout_copy)


@pytest.mark.parametrize(("name", "make"), ELEMENTWISE, ids=[n for n, _ in ELEMENTWISE])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_elementwise_accepts_a_0d_array(name: str, make: Callable[[], Module], dtype: type) -> None:
    module = make()
    out = module.forward(np.array(0.75, dtype))
    dx = module.backward(np.array(1.0, dtype))
    assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == dtype
    assert isinstance(dx, np.ndarray) and dx.shape == () and dx.dtype == dtype


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(
        st.sampled_from(DTYPES),
        array_shapes(min_dims=1, max_dims=3, max_side=6),
        elements=st.floats(min_value=-1e4, max_value=1e4, width=32),
    ),
    data=st.data(),
)
def test_softmax_sums_to_one_along_any_axis(x: np.ndarray, data: st.DataObject) -> None:
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis")
    with np.errstate(**LOUD):
        p = softmax(x, axis)
        lp = log_softmax(x, axis)
    assert p.dtype == x.dtype and lp.dtype == x.dtype
    assert np.all((p >= 0) & (p <= 1)) and np.all(lp <= 0)
    rtol = 1e-12 if x.dtype == np.float64 else 2e-6
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=rtol)
    np.testing.assert_allclose(np.exp(lp), p, rtol=rtol * 10, atol=1e-30)
    np.testing.assert_array_equal(Softmax(dim=axis)(x), p)


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    ticks=arrays(
        np.int64,
        array_shapes(min_dims=1, max_dims=3, max_side=6),
        elements=st.integers(-6400, 6400),
    ),
    shift=st.integers(-100, 100),
)
def test_softmax_ignores_a_shift_exactly(dtype: type, ticks: np.ndarray, shift: int) -> None:
    # multiples of 1/64 below 300 are exact in float32, so x + shift is exact and
    # softmax(x + shift) must reproduce softmax(x) bit for bit
    x = (ticks / 64).astype(dtype)
    shifted = x + dtype(shift)
    np.testing.assert_array_equal(softmax(shifted), softmax(x))
    np.testing.assert_array_equal(log_softmax(shifted), log_softmax(x))
    np.testing.assert_array_equal(Softmax(dim=0)(shifted), Softmax(dim=0)(x))


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(
        np.float64, st.tuples(st.integers(1, 5), st.integers(1, 8)), elements=st.floats(-1e4, 1e4)
    ),
    shift=st.floats(min_value=-1e3, max_value=1e3),
)
def test_softmax_ignores_any_shift_up_to_rounding(x: np.ndarray, shift: float) -> None:
    # x + shift rounds by at most 2e-12 here, which moves each probability by a
    # relative 4e-12 at most
    np.testing.assert_allclose(softmax(x + shift), softmax(x), rtol=1e-10, atol=1e-300)


extreme = st.one_of(
    st.sampled_from([1e4, -1e4, 1e3, -1e3, 710.0, -710.0, 89.0, -89.0, 0.0]),
    st.floats(min_value=-1e4, max_value=1e4, width=32),
)


@pytest.mark.parametrize(("name", "make"), ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@settings(max_examples=10, deadline=None)
@given(values=st.lists(extreme, min_size=1, max_size=12))
def test_finite_and_quiet_for_inputs_of_1e4(
    name: str, make: Callable[[], Module], dtype: type, values: list[float]
) -> None:
    x = np.array([[1e4, -1e4], *[[v, -v] for v in values]], dtype)
    module = make()
    with warnings.catch_warnings(), np.errstate(**LOUD):
        warnings.simplefilter("error")
        out = module.forward(x)
        dx = module.backward(np.ones_like(x))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dx))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_values_at_plus_minus_1e4(dtype: type) -> None:
    x = np.array([1e4, -1e4], dtype)
    t = dtype
    np.testing.assert_array_equal(Sigmoid()(x), [1, 0])
    np.testing.assert_array_equal(SiLU()(x), [1e4, 0])
    np.testing.assert_array_equal(GELU()(x), [1e4, 0])
    np.testing.assert_array_equal(GELU("tanh")(x), [1e4, 0])
    np.testing.assert_array_equal(ELU(0.5)(x), [1e4, -0.5])
    np.testing.assert_allclose(SELU()(x), [t(1e4 * F.SELU_SCALE), -F.SELU_SCALE * F.SELU_ALPHA])
    np.testing.assert_array_equal(Softmax()(x), [1, 0])
    np.testing.assert_array_equal(LogSoftmax()(x), [0, -2e4])


def test_sigmoid_keeps_relative_precision_for_negative_inputs() -> None:
    x = -np.geomspace(1e-3, 700, 400)
    expected = [1 / (1 + math.exp(-v)) for v in x]  # exp(-v) <= e^700: no overflow
    np.testing.assert_allclose(sigmoid(x), expected, rtol=1e-15)
    np.testing.assert_allclose(sigmoid(-x), [1 / (1 + math.exp(v)) for v in x], rtol=1e-15)


def test_softmax_backward_is_the_jacobian_vector_product() -> None:
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 4, 5))
    for dim in (0, 1, 2):
        module = Softmax(dim=dim)
        y = module.forward(x)
        dx = module.backward(dout)
        y_rows = np.moveaxis(y, dim, -1).reshape(-1, x.shape[dim])  # (M, C)
        d_rows = np.moveaxis(dout, dim, -1).reshape(-1, x.shape[dim])  # (M, C)
        jac = np.stack([np.diag(p) - np.outer(p, p) for p in y_rows])  # (M, C, C)
        expected = np.einsum("mij,mi->mj", jac, d_rows)  # (M, C)
        got = np.moveaxis(dx, dim, -1).reshape(-1, x.shape[dim])
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_log_softmax_backward_is_the_jacobian_vector_product() -> None:
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    module = LogSoftmax()
    p = np.exp(module.forward(x))
    dx = module.backward(dout)
    for row in range(3):
        jac = np.eye(6) - p[row][None, :]  # d log p_i / d x_j = delta_ij - p_j
        np.testing.assert_allclose(dx[row], jac.T @ dout[row], rtol=1e-12, atol=1e-15)


def test_kinks_follow_pytorch() -> None:
    x = np.array([-1.0, 0.0, 1.0])
    relu, leaky = ReLU(), LeakyReLU(0.2)
    relu(x)
    leaky(x)
    np.testing.assert_array_equal(relu.backward(np.ones(3)), [0, 0, 1])
    np.testing.assert_array_equal(leaky.backward(np.ones(3)), [0.2, 0.2, 1])


def test_selu_uses_pytorchs_constants() -> None:
    y = SELU()(np.array([1.0, -50.0]))
    np.testing.assert_allclose(y, [1.0507009873554805, -1.0507009873554805 * 1.6732632423543772])


def test_float64_dout_gives_the_inputs_dtype() -> None:
    for _, make in ACTIVATIONS:
        module = make()
        module.forward(np.ones((2, 3), np.float32))
        assert module.backward(np.ones((2, 3), np.float64)).dtype == np.float32


@pytest.mark.parametrize("shape", [(3, 0), (0, 4), (0,)])
def test_empty_inputs(shape: tuple[int, ...]) -> None:
    for _, make in ACTIVATIONS:
        module = make()
        x = np.zeros(shape, np.float32)
        assert module.forward(x).shape == shape
        assert module.backward(x).shape == shape


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "make"), ACTIVATIONS, ids=IDS)
def test_misuse_is_a_clear_error(name: str, make: Callable[[], Module]) -> None:
    module = make()
    with pytest.raises(RuntimeError, match="before forward"):
        module.backward(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="floating-point array"):
        module.forward(np.ones((2, 3), np.int64))
    with pytest.raises(TypeError, match=r"numpy\.ndarray"):
        module.forward([[1.0, 2.0]])  # type: ignore[arg-type]
    module.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"expects dout of shape \(2, 3\).*got \(3, 2\)"):
        module.backward(np.ones((3, 2)))
    with pytest.raises(TypeError, match="floating-point array"):
        module.backward(np.ones((2, 3), np.int64))


def test_gelu_rejects_unknown_approximation() -> None:
    with pytest.raises(ValueError, match="'none' or 'tanh'"):
        GELU(approximate="fast")
    with pytest.raises(ValueError, match="'none' or 'tanh'"):
        F.gelu(np.ones(2), approximate="erf")


def test_constructor_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="negative_slope must be a real number"):
        LeakyReLU("0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative_slope must be finite"):
        LeakyReLU(float("nan"))
    with pytest.raises(ValueError, match="alpha must be finite"):
        ELU(float("inf"))
    with pytest.raises(TypeError, match=r"dim must be an integer, got 1\.0"):
        Softmax(dim=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dim must be an integer, got None"):
        LogSoftmax(dim=None)  # type: ignore[arg-type]
    assert Softmax(dim=np.int64(1)).dim == 1


@pytest.mark.parametrize("cls", [Softmax, LogSoftmax])
def test_softmax_axis_out_of_range_is_named(cls: type) -> None:
    with pytest.raises(ValueError, match=r"dim=2.*got shape \(3, 4\)"):
        cls(dim=2)(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"expected -2 <= dim < 2"):
        cls(dim=-3)(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="0-d input"):
        cls()(np.array(1.0))


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


def test_repr_shows_the_arguments() -> None:
    assert repr(ReLU()) == "ReLU()"
    assert repr(LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert repr(ELU(alpha=0.5)) == "ELU(alpha=0.5)"
    assert repr(GELU(approximate="tanh")) == "GELU(approximate='tanh')"
    assert repr(Softmax(dim=1)) == "Softmax(dim=1)"
    assert repr(LogSoftmax()) == "LogSoftmax(dim=-1)"
