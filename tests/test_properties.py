"""Property tests over the whole registry (hypothesis): shapes, dtypes, untouched inputs,
softmax invariants, finite losses at extreme logits, dropout in eval mode, state round trip."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from handgrad.nn import CrossEntropyLoss, Dropout, LogSoftmax, Sigmoid, Softmax
from handgrad.nn.functional import log_softmax, sigmoid, softmax
from handgrad.recipes import build_mlp
from tests.cases import LOSS_CASES, MODULE_CASES, LossCase, ModuleCase

DTYPES = [np.float32, np.float64]


def _with_batch(case: ModuleCase, n: int, rng: np.random.Generator) -> np.ndarray:
    """The case's input with its batch axis resized to ``n`` (tiling rows)."""
    x = case.input(rng)
    reps = -(-n // x.shape[0])
    return np.concatenate([x] * reps, axis=0)[:n] + rng.standard_normal((n, *x.shape[1:])) * 1e-3


@pytest.mark.parametrize("case", MODULE_CASES, ids=str)
@settings(max_examples=10, deadline=None)
@given(n=st.integers(min_value=2, max_value=9), dtype=st.sampled_from(DTYPES))
def test_modules_keep_batch_dtype_and_inputs(case: ModuleCase, n: int, dtype: type) -> None:
    rng = np.random.default_rng(n)
    module = case.make(rng).train(case.train).to(dtype)
    x = _with_batch(case, n, rng).astype(dtype)
    x_copy = x.copy()
    out = module.forward(x)
    assert out.shape[0] == n and out.dtype == dtype
    dout = rng.standard_normal(out.shape).astype(dtype)
    dout_copy = dout.copy()
    dx = module.backward(dout)
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(dout, dout_copy)
    for _, p in module.named_parameters():
        assert p.grad.dtype == dtype and p.grad.shape == p.data.shape


@pytest.mark.parametrize("case", MODULE_CASES, ids=str)
def test_backward_before_forward_is_an_error(case: ModuleCase) -> None:
    module = case.make(np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="before forward"):
        module.backward(np.zeros((2, 2)))
    if any(True for _ in module.parameters()):
        with pytest.raises(RuntimeError, match="before forward"):
            module.backward_params(np.zeros((2, 2)))


@pytest.mark.parametrize("case", MODULE_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_backward_params_gives_the_parameter_gradients_of_backward(
    case: ModuleCase, dtype: type
) -> None:
    grads = []
    for method in ("backward", "backward_params"):
        rng = np.random.default_rng(0)
        module = case.make(rng).train(case.train).to(dtype)
        x = case.input(rng).astype(dtype)
        if case.before_forward is not None:
            case.before_forward(module)
        out = module.forward(x)
        module.zero_grad()
        result = getattr(module, method)(rng.standard_normal(out.shape).astype(dtype))
        if method == "backward_params":
            assert result is None
        grads.append({name: p.grad.copy() for name, p in module.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        np.testing.assert_array_equal(grads[1][name], grad, err_msg=name)


@pytest.mark.parametrize("case", LOSS_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_losses_keep_dtype_and_inputs(case: LossCase, dtype: type) -> None:
    rng = np.random.default_rng(0)
    loss = case.make()
    x = case.input(rng).astype(dtype)
    t = case.target(rng)
    t = t.astype(dtype) if np.issubdtype(t.dtype, np.floating) else t
    copies = (x.copy(), t.copy())
    value = loss(x, t)
    dx = loss.backward()
    assert isinstance(value, float) and np.isfinite(value)
    assert dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_array_equal(x, copies[0])
    np.testing.assert_array_equal(t, copies[1])
    np.testing.assert_allclose(loss.backward(2.0), 2 * dx, rtol=1e-6)
    with pytest.raises(RuntimeError, match="before forward"):
        case.make().backward()


CLASSIFICATION = [
    c for c in LOSS_CASES if c.name.startswith(("CrossEntropy", "Focal", "MultiMargin"))
]


@pytest.mark.parametrize(
    "case", CLASSIFICATION + [c for c in LOSS_CASES if "BCE" in c.name], ids=str
)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_losses_are_finite_and_quiet_at_extreme_logits(case: LossCase, dtype: type) -> None:
    rng = np.random.default_rng(0)
    x = (np.sign(case.input(rng)) * 1e4).astype(dtype)
    t = case.target(rng)
    t = t.astype(dtype) if np.issubdtype(t.dtype, np.floating) else t
    loss = case.make()
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        value = loss(x, t)
        dx = loss.backward()
    assert np.isfinite(value) and np.all(np.isfinite(dx))


finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)


@settings(max_examples=50, deadline=None)
@given(
    x=arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 8)), elements=finite),
    shift=st.floats(min_value=-100, max_value=100),
)
def test_softmax_rows_sum_to_one_and_ignore_shifts(x: np.ndarray, shift: float) -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = softmax(x)
        assert np.all(p >= 0)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(softmax(x + shift), p, atol=1e-12)
        np.testing.assert_allclose(np.exp(log_softmax(x)), p, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(x=arrays(np.float32, st.integers(1, 50), elements=finite))
def test_sigmoid_and_softmax_are_quiet_for_huge_inputs(x: np.ndarray) -> None:
    x = x * np.float32(1e3)  # up to 1e7
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        s = sigmoid(x)
        p = Softmax()(x[None])
        lp = LogSoftmax()(x[None])
        Sigmoid()(x)
        CrossEntropyLoss()(x[None], np.array([0]))
    assert s.dtype == np.float32 and np.all((s >= 0) & (s <= 1))
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(lp))


@settings(max_examples=20, deadline=None)
@given(shape=st.tuples(st.integers(1, 5), st.integers(1, 7)), p=st.floats(0.0, 0.95))
def test_dropout_is_the_identity_in_eval_mode(shape: tuple[int, int], p: float) -> None:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    drop = Dropout(p, rng=0).eval()
    np.testing.assert_array_equal(drop(x), x)
    np.testing.assert_array_equal(drop.backward(x), x)


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    seed=st.integers(0, 2**31),
    bn=st.booleans(),
)
def test_state_dict_round_trip(sizes: list[int], seed: int, bn: bool) -> None:
    model = build_mlp(5, sizes, 3, batch_norm=bn, rng=seed)
    x = np.random.default_rng(seed).standard_normal((4, 5)).astype(np.float32)
    model.forward(x)  # moves running statistics
    model.eval()
    other = build_mlp(5, sizes, 3, batch_norm=bn, rng=seed + 1).eval()
    other.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(other.forward(x), model.forward(x))
