"""``Sequential`` runs Conv2d + MaxPool2d (+ the ReLU after them) as one fused ConvMaxPool.

The fusion must give what the modules give one by one in the written order: the
same output, input gradient and parameter gradients (to the bit when every value is
an integer, so that no sum can round; to rounding otherwise), over ties, zeros,
all-negative windows, NaN and infinities; the same bits on any number of threads;
and the same errors, naming the modules the user wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import handgrad
from handgrad import nn
from handgrad._parallel import scratch
from handgrad.nn.fused import ConvMaxPool
from handgrad.nn.module import Module

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}

# (conv kwargs, pool kwargs, input shape (N, C, H, W))
GEOMETRIES: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[int, ...]]] = {
    "lenet-like": (
        {"in_channels": 1, "out_channels": 4, "kernel_size": 3},
        {"kernel_size": 2},
        (5, 1, 12, 11),
    ),
    "rows-layout": (
        {"in_channels": 6, "out_channels": 3, "kernel_size": 3, "padding": 1},
        {"kernel_size": 2},
        (3, 6, 7, 8),
    ),
    "stride-dilation": (
        {
            "in_channels": 2,
            "out_channels": 3,
            "kernel_size": 3,
            "stride": 2,
            "padding": 2,
            "dilation": 2,
        },
        {"kernel_size": (2, 3)},
        (2, 2, 11, 13),
    ),
    "pool3-nobias": (
        {
            "in_channels": 6,
            "out_channels": 2,
            "kernel_size": (2, 3),
            "padding": "same",
            "bias": False,
        },
        {"kernel_size": 3},
        (2, 6, 8, 10),
    ),
}


def build(geometry: str, dtype: type, relu: bool, integer: bool, seed: int = 3) -> list[Module]:
    """Conv2d, [ReLU], MaxPool2d, Flatten, Linear: fresh, the same for the same seed.

    ``integer``: weights and biases in {-1, 0, 1}, so integer inputs give integer
    values everywhere, full of exact zeros, ties and all-negative windows."""
    conv_kw, pool_kw, shape = GEOMETRIES[geometry]
    rng = np.random.default_rng(seed)
    conv = nn.Conv2d(**conv_kw, rng=rng, dtype=dtype)
    pool = nn.MaxPool2d(**pool_kw)
    if integer:
        conv.weight.data[...] = rng.integers(-1, 2, conv.weight.shape)
        if conv.bias is not None:
            conv.bias.data[...] = rng.integers(-1, 2, conv.bias.shape)
    pooled = pool.forward(conv.forward(np.zeros((1, *shape[1:]), dtype)))
    linear = nn.Linear(pooled.size, 3, rng=rng, dtype=dtype)
    if integer:
        linear.weight.data[...] = rng.integers(-1, 2, linear.weight.shape)
    return [conv, *([nn.ReLU()] if relu else []), pool, nn.Flatten(), linear]


def one_by_one(modules: list[Module], x: np.ndarray, dout: np.ndarray) -> tuple[np.ndarray, ...]:
    """Output, input gradient and parameter gradients, the modules run as written."""
    h = x
    for m in modules:
        h = m.forward(h)
    d = dout
    for m in reversed(modules):
        d = m.backward(d)
    grads = tuple(p.grad for m in modules for p in m.parameters())
    return (h, d, *grads)


def fused_run(modules: list[Module], x: np.ndarray, dout: np.ndarray) -> tuple[np.ndarray, ...]:
    model = nn.Sequential(*modules)
    assert any(isinstance(m, ConvMaxPool) for m in model._order())
    y = model.forward(x)
    dx = model.backward(dout)
    return (y, dx, *(p.grad for p in model.parameters()))


def inputs(kind: str, shape: tuple[int, ...], dtype: type, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "integers":  # ties, zeros, all-negative windows
        x = rng.choice(np.array([-2, -1, 0, 0, 1, 2], dtype), shape)
        x[..., :4, :4] = -np.abs(x[..., :4, :4]) - 1
        return x
    if kind == "all-equal":  # every window a tie
        return np.ones(shape, dtype)
    x = rng.standard_normal(shape).astype(dtype)  # "nan-inf"
    x.flat[rng.choice(x.size, 3, replace=False)] = [np.nan, np.inf, -np.inf]
    return x


def assert_close(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...], rtol: float) -> None:
    names = ["output", "input gradient", *(f"parameter {i}" for i in range(len(want) - 2))]
    assert len(got) == len(want)
    for name, g, w in zip(names, got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        assert np.array_equal(np.isnan(g), np.isnan(w)), f"{name}: NaN in other places"
        if rtol == 0:
            assert np.array_equal(g, w, equal_nan=True), name
        else:
            scale = np.nanmax(np.abs(w[np.isfinite(w)]), initial=1.0)
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale, err_msg=name)


# -- what is fused ------------------------------------------------------------------


def lenet(relu_last: bool = True) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, rng=0),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3, rng=0),
        *([nn.ReLU()] if relu_last else []),
    )


def test_sequential_fuses_each_conv_and_pool_with_the_relu_after_them() -> None:
    model = lenet()
    order = model._order()
    assert [type(m).__name__ for m in order] == [
        "ConvMaxPool",
        "ConvMaxPool",
        "Flatten",
        "Linear",
        "ReLU",
    ]
    first, second = order[0], order[1]
    assert isinstance(first, ConvMaxPool) and isinstance(second, ConvMaxPool)
    assert (first.conv, first.pool, first.relu) == (model[0], model[2], model[1])
    assert (second.conv, second.pool, second.relu) == (model[3], model[4], None)
    assert model._order()[0] is first  # the same fused module every step: it keeps its buffers
    assert [type(m).__name__ for m in model] == [  # the model itself is as written
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Conv2d",
        "MaxPool2d",
        "Flatten",
        "Linear",
        "ReLU",
    ]


class _MyConv(nn.Conv2d):
    pass


class _MyPool(nn.MaxPool2d):
    pass


@pytest.mark.parametrize(
    "modules",
    [
        pytest.param(lambda: [nn.Conv2d(2, 2, 3), nn.MaxPool2d(2, padding=1)], id="padded pool"),
        pytest.param(lambda: [nn.Conv2d(2, 2, 3), nn.MaxPool2d(2, stride=1)], id="overlapping"),
        pytest.param(lambda: [nn.Conv2d(2, 2, 3), nn.MaxPool2d(2, stride=3)], id="gaps"),
        pytest.param(lambda: [nn.Conv2d(2, 2, 3), nn.MaxPool2d(2, dilation=2)], id="dilated pool"),
        pytest.param(lambda: [nn.Conv2d(2, 2, 3, groups=2), nn.MaxPool2d(2)], id="groups"),
        pytest.param(lambda: [_MyConv(2, 2, 3), nn.MaxPool2d(2)], id="Conv2d subclass"),
        pytest.param(lambda: [nn.Conv2d(2, 2, 3), _MyPool(2)], id="MaxPool2d subclass"),
        pytest.param(lambda: [nn.Conv2d(2, 2, 3), nn.AvgPool2d(2)], id="AvgPool2d"),
        pytest.param(
            lambda: [nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2), nn.MaxPool2d(2)], id="batch norm"
        ),
        pytest.param(lambda: [nn.Conv2d(2, 2, 3), nn.LeakyReLU(), nn.MaxPool2d(2)], id="LeakyReLU"),
    ],
)
def test_what_is_not_fused_runs_as_written(modules: Callable[[], list[Module]]) -> None:
    model = nn.Sequential(*modules())
    assert not any(isinstance(m, ConvMaxPool) for m in model._order())
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    y = model.forward(x)
    ref = x
    for m in modules():
        ref = m.forward(ref)
    assert y.shape == ref.shape


# -- the same results ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "integers", "all-equal"])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "no-relu"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_fused_gives_what_the_modules_give_one_by_one(
    dtype: type, geometry: str, relu: bool, kind: str
) -> None:
    rng = np.random.default_rng(1)
    exact = kind != "normal"
    x = inputs(kind, GEOMETRIES[geometry][2], dtype, rng)
    dout = rng.integers(-2, 3, (x.shape[0], 3)).astype(dtype)
    want = one_by_one(build(geometry, dtype, relu, exact), x, dout)
    got = fused_run(build(geometry, dtype, relu, exact), x, dout)
    # "all-equal" makes every window of the first layer a tie: equal bits mean the
    # fused pooling sent each window's gradient to the same (first) input
    assert_close(got, want, 0.0 if exact else RTOL[dtype])


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "no-relu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_nan_and_inf_land_where_the_modules_put_them(dtype: type, relu: bool) -> None:
    rng = np.random.default_rng(2)
    x = inputs("nan-inf", GEOMETRIES["lenet-like"][2], dtype, rng)
    dout = rng.standard_normal((x.shape[0], 3)).astype(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        want = one_by_one(build("lenet-like", dtype, relu, False), x, dout)
        got = fused_run(build("lenet-like", dtype, relu, False), x, dout)
    assert np.isnan(want[0]).any()  # the test does reach NaN
    for g, w in zip(got[:2], want[:2], strict=True):  # output and input gradient
        assert np.array_equal(np.isnan(g), np.isnan(w))
        finite = np.isfinite(w)
        np.testing.assert_allclose(g[finite], w[finite], rtol=RTOL[dtype])


def test_a_tie_sends_the_gradient_to_the_first_maximum_only() -> None:
    """A 2x2 window of equal conv outputs: the gradient goes to the first of them."""
    conv = nn.Conv2d(1, 1, 1, rng=0, dtype=np.float64)
    conv.weight.data[...] = 1.0
    assert conv.bias is not None
    conv.bias.data[...] = 0.0
    model = nn.Sequential(conv, nn.MaxPool2d(2))
    assert isinstance(model._order()[0], ConvMaxPool)
    x = np.full((1, 1, 2, 2), 3.0)
    model.forward(x)
    dx = model.backward(np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(dx[0, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_backward_params_gives_backwards_parameter_gradients() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 1, 14, 14)).astype(np.float32)
    grads = []
    for method in ("backward", "backward_params"):
        model = lenet()
        out = model.forward(x)
        getattr(model, method)(np.ones_like(out))
        grads.append([p.grad.copy() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_same_bits_on_any_number_of_threads() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((70, 1, 14, 14)).astype(np.float32)  # chunks of 32, 32 and 6
    results = []
    try:
        for threads in (1, 2, 3):
            handgrad.set_num_threads(threads)
            model = lenet()
            out = model.forward(x)
            dx = model.backward(np.cos(np.arange(out.size, dtype=np.float32)).reshape(out.shape))
            results.append([out, dx, *(p.grad.copy() for p in model.parameters())])
    finally:
        handgrad.set_num_threads(1)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_reused_buffers_do_not_leak_between_steps() -> None:
    """Step 2 reuses step 1's buffers; it must give what a fresh model gives."""
    rng = np.random.default_rng(6)
    x1, x2 = (rng.standard_normal((40, 1, 14, 14)).astype(np.float32) for _ in range(2))
    model = lenet()
    model.forward(x1)
    model.backward(np.ones((40, 3), np.float32))
    fused = model._order()[0]
    assert isinstance(fused, ConvMaxPool) and fused._scratch  # buffers were kept
    model.zero_grad()
    y = model.forward(x2)
    dx = model.backward(np.ones((40, 3), np.float32))
    fresh = lenet()
    np.testing.assert_array_equal(y, fresh.forward(x2))
    np.testing.assert_array_equal(dx, fresh.backward(np.ones((40, 3), np.float32)))
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        np.testing.assert_array_equal(p.grad, q.grad)


def test_scratch_keeps_a_buffer_per_key_and_shape() -> None:
    store: dict[object, np.ndarray] = {}
    a = scratch(store, "k", (3, 4), np.dtype(np.float32))
    assert scratch(store, "k", (3, 4), np.dtype(np.float32)) is a
    assert scratch(store, "k", (4, 3), np.dtype(np.float32)) is not a  # new shape: new buffer
    assert scratch(store, "k", (4, 3), np.dtype(np.float64)).dtype == np.float64
    assert scratch(None, "k", (2,), np.dtype(np.float32)).shape == (2,)


# -- eval mode, stale caches, errors --------------------------------------------------


def test_eval_mode_keeps_no_gradient_state() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 1, 14, 14)).astype(np.float32)
    model = lenet().eval()
    y = model.forward(x)
    ref = x
    for m in lenet().eval():
        ref = m.forward(ref)
    np.testing.assert_allclose(y, ref, rtol=1e-6)
    with pytest.raises(RuntimeError, match="eval mode"):
        model.backward(np.ones_like(y))


def test_the_modules_own_caches_are_cleared_by_a_fused_forward() -> None:
    model = lenet()
    x = np.zeros((2, 1, 14, 14), np.float32)
    model[0].forward(x)  # a cache of its own...
    model.forward(x)  # ...that the fused forward made stale
    with pytest.raises(RuntimeError, match="before forward"):
        model[0].backward(np.zeros((2, 4, 12, 12), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        model[2].backward(np.zeros((2, 4, 6, 6), np.float32))


def test_errors_name_the_modules_the_user_wrote() -> None:
    model = lenet()
    with pytest.raises(ValueError, match=r"Conv2d.forward expects 1 input channels"):
        model.forward(np.zeros((2, 3, 12, 12), np.float32))
    with pytest.raises(TypeError, match=r"Conv2d\.forward"):
        model.forward(np.zeros((2, 1, 14, 14), np.float64))
    with pytest.raises(ValueError, match=r"MaxPool2d\.forward"):
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(4)).forward(
            np.zeros((1, 1, 5, 5), np.float32)
        )
    small = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2))
    small.forward(np.zeros((1, 1, 6, 6), np.float32))
    with pytest.raises(ValueError, match=r"MaxPool2d\.backward"):
        small.backward(np.zeros((1, 2, 3, 3), np.float32))
