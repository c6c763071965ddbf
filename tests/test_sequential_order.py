"""``Sequential`` runs an unpadded ``MaxPool2d`` before a ``ReLU`` written just in front of it.

Max-pooling and ReLU commute, so ``Sequential._order`` pools first and the ReLU sees
a fraction of the values. These tests hold it to its claim: the same bits as running
the modules one by one in the written order (output, input gradient, every parameter
gradient, the signs of zeros included), in float32 and float64, over ties, exact
zeros, all-negative windows, -0.0, infinities and NaN.

The convolution + max-pool fusion that ``Sequential`` also does changes rounding (its
weight gradients add the same terms in another order), so these tests switch it off
to pin the swap alone; ``tests/test_fused.py`` holds the fusion to its own claims.

One exception, pinned below: when the pool's windows overlap (stride < dilated
kernel), the gradient w.r.t. the *ReLU's own input* can hold +0.0 where the written
order gives -0.0. Equal as numbers; a Conv2d in front of the pair adds it onto a
+0.0 buffer, where it vanishes, so the conv networks here are bit-identical. It shows
where that gradient comes out unchanged: the pair first in the Sequential (or behind
a pass-through such as Flatten or Identity).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from handgrad import nn
from handgrad.nn import fused
from handgrad.nn._spatial import output_size
from handgrad.nn.module import Module


@pytest.fixture(autouse=True)
def _swap_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No conv + pool fusion here (see the module docstring)."""
    monkeypatch.setattr(fused, "fusable", lambda conv, pool: False)


# -- helpers ------------------------------------------------------------------------

POOLS: dict[str, dict[str, Any]] = {
    "k2": {"kernel_size": 2},
    "k3": {"kernel_size": 3},
    "k2x3s3x3": {"kernel_size": (2, 3), "stride": (3, 3)},
    "k2d2s3": {"kernel_size": 2, "dilation": 2, "stride": 3},
}
DTYPES = [np.float32, np.float64]
SHAPE = (3, 2, 7, 8)  # (N, C, H, W); the odd H leaves a row that "k2" never reads


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def assert_same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Same dtype, shape and bits; NaN must sit in the same places (payload aside)."""
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} vs {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    nan = np.isnan(got)
    assert np.array_equal(nan, np.isnan(want)), f"{what}: NaN in different places"
    diff = (_bits(got) != _bits(want)) & ~nan
    if diff.any():
        idx = tuple(int(i) for i in np.argwhere(diff)[0])
        raise AssertionError(
            f"{what}: {int(diff.sum())} of {diff.size} values differ in their bits, "
            f"first at {idx}: {got[idx]!r} vs {want[idx]!r} (written order)"
        )


def _pooled_hw(hw: tuple[int, ...], pool: nn.MaxPool2d) -> tuple[int, int]:
    k, s, p, d = pool.kernel_size, pool.stride, pool.padding, pool.dilation
    oh = output_size(hw[0], k[0], s[0], 2 * p[0], d[0])
    return oh, output_size(hw[1], k[1], s[1], 2 * p[1], d[1])


def conv_net(
    seed: int,
    dtype: type,
    pool_kw: dict[str, Any],
    shape: tuple[int, ...] = SHAPE,
    *,
    integer_weights: bool = False,
    act: Callable[[], Module] = nn.ReLU,
    c_out: int = 3,
    k: int = 3,
) -> list[Module]:
    """Conv2d, act, MaxPool2d, Flatten, Linear: fresh modules, the same for the same seed.

    ``integer_weights``: conv weights and bias in {-1, 0, 1}, so integer inputs give
    integer feature maps, full of exact zeros, ties and all-negative windows.
    """
    rng = np.random.default_rng(seed)
    conv = nn.Conv2d(shape[1], c_out, k, padding=k // 2, rng=rng, dtype=dtype)
    if integer_weights:
        assert conv.bias is not None
        conv.weight.data[...] = rng.integers(-1, 2, conv.weight.shape)
        conv.bias.data[...] = rng.integers(-1, 2, conv.bias.shape)
    pool = nn.MaxPool2d(**pool_kw)
    oh, ow = _pooled_hw(shape[2:], pool)
    return [conv, act(), pool, nn.Flatten(), nn.Linear(c_out * oh * ow, 4, rng=rng, dtype=dtype)]


def pair_net(
    seed: int, dtype: type, pool_kw: dict[str, Any], shape: tuple[int, ...]
) -> list[Module]:
    """ReLU, MaxPool2d, Flatten, Linear: the pair first, so its input gradient is visible."""
    pool = nn.MaxPool2d(**pool_kw)
    oh, ow = _pooled_hw(shape[2:], pool)
    linear = nn.Linear(shape[1] * oh * ow, 3, rng=seed, dtype=dtype)
    return [nn.ReLU(), pool, nn.Flatten(), linear]


def written_order(
    modules: list[Module], x: np.ndarray, dout: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Forward one by one as written, backward in reverse: ``(output, input gradient)``."""
    h: np.ndarray = x
    for m in modules:
        h = m.forward(h)
    d: np.ndarray = dout
    for m in reversed(modules):
        d = m.backward(d)
    return h, d


def _dout(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A random upstream gradient with some exact +0.0 and -0.0 in it."""
    d: np.ndarray = rng.standard_normal(shape).astype(dtype)
    d[rng.random(shape) < 0.15] = 0.0
    d[rng.random(shape) < 0.15] = -0.0
    return d


def _names(modules: Iterable[Module]) -> list[str]:
    return [type(m).__name__ for m in modules]


def compare_with_written(
    build: Callable[[], list[Module]],
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    input_grad_bits: bool = True,
) -> tuple[nn.Sequential, np.ndarray, np.ndarray]:
    """Run ``Sequential(*build())`` and the written order on fresh copies; assert the
    output, input gradient and parameter gradients have the same bits (the input
    gradient only the same values unless ``input_grad_bits``), and that
    ``backward_params`` gives ``backward``'s parameter gradients.

    Returns the model and both input gradients, ``(model, dx, dx_written)``."""
    model = nn.Sequential(*build())
    y = model.forward(x)
    dout = _dout(rng, y.shape, y.dtype.type)
    dx = model.backward(dout)
    reference = build()
    y_ref, dx_ref = written_order(reference, x, dout)
    assert_same_bits(y, y_ref, "output")
    if input_grad_bits:
        assert_same_bits(dx, dx_ref, "input gradient")
    else:
        assert np.array_equal(dx, dx_ref, equal_nan=True), "input gradient values"
    ref_params = nn.Sequential(*reference).named_parameters()
    for (name, p), (_, q) in zip(model.named_parameters(), ref_params, strict=True):
        assert_same_bits(p.grad, q.grad, f"{name}.grad")
    only_params = nn.Sequential(*build())
    only_params.forward(x)
    only_params.backward_params(dout)
    for (name, p), q in zip(only_params.named_parameters(), model.parameters(), strict=True):
        assert_same_bits(p.grad, q.grad, f"backward_params {name}.grad")
    return model, dx, dx_ref


# -- inputs -------------------------------------------------------------------------


def _normal(rng: np.random.Generator, dtype: type) -> np.ndarray:
    return rng.standard_normal(SHAPE).astype(dtype)


def _zeros_and_negative_windows(rng: np.random.Generator, dtype: type) -> np.ndarray:
    x = rng.choice(np.array([-2, -1, 0, 0, 0, 1, 2], dtype), SHAPE)
    x[:, :, :4, :4] = -np.abs(x[:, :, :4, :4]) - 1  # a block of all-negative windows
    return x


def _all_negative(rng: np.random.Generator, dtype: type) -> np.ndarray:
    return (-rng.random(SHAPE) - 0.01).astype(dtype)


def _positive_ties(rng: np.random.Generator, dtype: type) -> np.ndarray:
    return rng.choice(np.array([-1, 1, 2, 2, 2], dtype), SHAPE)  # windows with several 2s


def _negative_zero(rng: np.random.Generator, dtype: type) -> np.ndarray:
    return rng.choice(np.array([-0.0, -0.0, 0.0, -1.0, 1.0], dtype), SHAPE)


INPUTS = {
    "normal": _normal,
    "zeros_and_negative_windows": _zeros_and_negative_windows,
    "all_negative": _all_negative,
    "positive_ties": _positive_ties,
    "negative_zero": _negative_zero,
}


# -- the swap is applied, and changes no bit --------------------------------------


def test_order_pools_before_the_relu_in_front_of_it() -> None:
    model = nn.Sequential(*conv_net(0, np.float32, {"kernel_size": 2}))
    assert _names(model._order()) == ["Conv2d", "MaxPool2d", "ReLU", "Flatten", "Linear"]
    assert _names(model) == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"]  # as written
    lenet = nn.Sequential(
        nn.Conv2d(1, 2, 3, rng=0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2, 2, 3, rng=0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2, 3, rng=0),
        nn.ReLU(),
    )
    assert _names(lenet._order()) == [
        "Conv2d",
        "MaxPool2d",
        "ReLU",
        "Conv2d",
        "MaxPool2d",
        "ReLU",
        "Flatten",
        "Linear",
        "ReLU",
    ]


@pytest.mark.parametrize("weights", ["random", "integer"])
@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_conv_relu_pool_matches_the_written_order_bit_for_bit(
    dtype: type, pool: str, inputs: str, weights: str
) -> None:
    rng = np.random.default_rng(1)
    x = INPUTS[inputs](rng, dtype)

    def build() -> list[Module]:
        return conv_net(7, dtype, POOLS[pool], integer_weights=weights == "integer")

    model, _, _ = compare_with_written(build, x, rng)
    assert _names(model._order())[1:3] == ["MaxPool2d", "ReLU"]  # the swap really ran


@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_integer_weights_feed_the_pool_ties_zeros_and_negative_windows(
    dtype: type, pool: str
) -> None:
    """The integer fixture does reach the pool with what the grid claims to test."""
    rng = np.random.default_rng(1)
    seen = {"exact zero": False, "negative window": False, "tied positive maximum": False}
    for make in INPUTS.values():
        conv, _, mp, _, _ = conv_net(7, dtype, POOLS[pool], integer_weights=True)
        h = conv.forward(make(rng, dtype))
        k, s, d = mp.kernel_size, mp.stride, mp.dilation
        span = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
        win = np.lib.stride_tricks.sliding_window_view(h, span, axis=(2, 3))
        win = win[:, :, :: s[0], :: s[1], :: d[0], :: d[1]]
        win = win.reshape(*win.shape[:4], -1)  # (N, C, OH, OW, KH*KW)
        top = win.max(axis=-1)
        seen["exact zero"] |= bool((h == 0).any())
        seen["negative window"] |= bool((top < 0).any())
        seen["tied positive maximum"] |= bool(((win == top[..., None]).sum(-1)[top > 0] > 1).any())
    assert all(seen.values()), seen


@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_nan_input_lands_where_the_written_order_puts_it(dtype: type, pool: str) -> None:
    rng = np.random.default_rng(2)
    x: np.ndarray = rng.standard_normal(SHAPE).astype(dtype)
    x[rng.random(SHAPE) < 0.03] = np.nan
    model, _, _ = compare_with_written(lambda: conv_net(7, dtype, POOLS[pool]), x, rng)
    y = model.forward(x)
    assert np.isnan(y).any() and not np.isnan(y).all()  # the test does see NaN

    pair_x = rng.choice(np.array([-1.0, 0.0, 2.0, np.nan], dtype), SHAPE)
    compare_with_written(
        lambda: pair_net(3, dtype, POOLS[pool], SHAPE), pair_x, rng, input_grad_bits=False
    )
    pooled = nn.MaxPool2d(**POOLS[pool]).forward(pair_x)
    assert np.isnan(pooled).any() and not np.isnan(pooled).all()


@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_eval_mode_output_matches_the_written_order(dtype: type, pool: str) -> None:
    rng = np.random.default_rng(3)
    x = _zeros_and_negative_windows(rng, dtype)
    model = nn.Sequential(*conv_net(7, dtype, POOLS[pool], integer_weights=True))
    reference = nn.Sequential(*conv_net(7, dtype, POOLS[pool], integer_weights=True))
    model.eval()
    reference.eval()
    y = model.forward(x)
    h = x
    for m in reference:  # Sequential iterates in the written order
        h = m.forward(h)
    assert_same_bits(y, h, "eval output")
    assert _names(model._order())[1:3] == ["MaxPool2d", "ReLU"]
    assert model[2]._cache is None  # eval mode: no argmax kept
    with pytest.raises(RuntimeError, match="eval mode"):
        model.backward(np.ones_like(y))


# -- the pair at the front: the one place the bits can differ ----------------------


@settings(max_examples=120, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_relu_pool_pair_first_matches_the_written_order(data: st.DataObject, dtype: type) -> None:
    """Output, parameter and input gradients: the same bits (overlapping windows are
    not swapped)."""
    kernel = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="kernel")
    stride = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="stride")
    dilation = data.draw(st.tuples(st.integers(1, 2), st.integers(1, 2)), label="dilation")
    span = [dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)]
    n, c = data.draw(st.integers(1, 2), label="N"), data.draw(st.integers(1, 2), label="C")
    h, w = data.draw(st.integers(span[0], 7), label="H"), data.draw(st.integers(span[1], 7))
    values = [-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0, np.inf, -np.inf]
    x = data.draw(arrays(dtype, (n, c, h, w), elements=st.sampled_from(values)), label="x")
    pool_kw = {"kernel_size": kernel, "stride": stride, "dilation": dilation}
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    for build in (
        lambda: pair_net(4, dtype, pool_kw, x.shape),
        lambda: pair_net(4, dtype, pool_kw, x.shape)[:2],  # the pair is also the last
    ):
        with np.errstate(invalid="ignore"):  # inf * 0 in the Linear layer: NaN, both ways
            model, dx, dx_ref = compare_with_written(build, x, rng, input_grad_bits=False)
        disjoint = stride[0] >= span[0] and stride[1] >= span[1]
        expected = ["MaxPool2d", "ReLU"] if disjoint else ["ReLU", "MaxPool2d"]
        assert _names(model._order())[:2] == expected
        assert not (_bits(dx) != _bits(dx_ref)).any()  # swapped or not: the same bits


def test_overlapping_windows_keep_the_written_order() -> None:
    """Overlapping windows would give +0.0 where the written order gives -0.0 in the
    gradient w.r.t. the ReLU's input, so they are not swapped: the bits stay the same."""
    x = np.array([[[[-1.0, -2.0, 5.0]]]])  # (1, 1, 1, 3)
    dout = np.array([[[[-1.0, -1.0]]]])  # two windows of width 2, stride 1: they overlap
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d((1, 2), stride=1))
    assert _names(model._order()) == ["ReLU", "MaxPool2d"]
    model.forward(x)
    dx = model.backward(dout)
    _, dx_ref = written_order([nn.ReLU(), nn.MaxPool2d((1, 2), stride=1)], x, dout)
    assert_same_bits(dx, dx_ref, "input gradient")


# -- networks built from integers: hypothesis over pool geometry -------------------


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_integer_conv_net_matches_the_written_order(data: st.DataObject, dtype: type) -> None:
    kernel = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="kernel")
    stride = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="stride")
    dilation = data.draw(st.tuples(st.integers(1, 2), st.integers(1, 2)), label="dilation")
    span = [dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)]
    shape = (
        data.draw(st.integers(1, 2), label="N"),
        data.draw(st.integers(1, 2), label="C"),
        data.draw(st.integers(span[0], 7), label="H"),
        data.draw(st.integers(span[1], 7), label="W"),
    )
    values = [-2.0, -1.0, -0.0, 0.0, 1.0, 2.0]
    x = data.draw(arrays(dtype, shape, elements=st.sampled_from(values)), label="x")
    c_out = data.draw(st.integers(1, 2), label="C_out")
    k = data.draw(st.sampled_from([1, 3]), label="conv kernel")
    pool_kw = {"kernel_size": kernel, "stride": stride, "dilation": dilation}
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    compare_with_written(
        lambda: conv_net(5, dtype, pool_kw, shape, integer_weights=True, c_out=c_out, k=k),
        x,
        rng,
    )


# -- where the swap must not happen ------------------------------------------------


class _MyReLU(nn.ReLU):
    """A ReLU subclass: may have changed forward, so it is not swapped."""


class _MyMaxPool(nn.MaxPool2d):
    pass


@pytest.mark.parametrize(
    "modules",
    [
        pytest.param(lambda: [nn.ReLU(), nn.MaxPool2d(2, padding=1)], id="padded pool"),
        pytest.param(
            lambda: [nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=(0, 1))], id="padded in W only"
        ),
        pytest.param(lambda: [nn.LeakyReLU(), nn.MaxPool2d(2)], id="LeakyReLU"),
        pytest.param(lambda: [nn.LeakyReLU(0.0), nn.MaxPool2d(2)], id="LeakyReLU(0)"),
        pytest.param(lambda: [_MyReLU(), nn.MaxPool2d(2)], id="ReLU subclass"),
        pytest.param(lambda: [nn.ReLU(), _MyMaxPool(2)], id="MaxPool2d subclass"),
        pytest.param(lambda: [nn.ReLU(), nn.AvgPool2d(2)], id="AvgPool2d"),
        pytest.param(lambda: [nn.ReLU(), nn.Identity(), nn.MaxPool2d(2)], id="not adjacent"),
        pytest.param(lambda: [nn.MaxPool2d(2), nn.ReLU()], id="already pooled first"),
    ],
)
def test_written_order_kept(modules: Callable[[], list[Module]]) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 6, 6))
    model = nn.Sequential(*modules())
    assert _names(model._order()) == _names(model)
    y = model.forward(x)
    dout = rng.standard_normal(y.shape)
    dx = model.backward(dout)
    y_ref, dx_ref = written_order(modules(), x, dout)
    assert_same_bits(y, y_ref, "output")
    assert_same_bits(dx, dx_ref, "input gradient")


def test_padded_pool_in_a_conv_net_keeps_the_written_order() -> None:
    rng = np.random.default_rng(5)
    x = _zeros_and_negative_windows(rng, np.float64)
    pool_kw = {"kernel_size": 2, "padding": 1}
    model, _, _ = compare_with_written(
        lambda: conv_net(7, np.float64, pool_kw, integer_weights=True), x, rng
    )
    assert _names(model._order()) == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"]


# -- nesting and position ----------------------------------------------------------


def test_nested_sequential_backward_replays_the_order_its_forward_ran() -> None:
    rng = np.random.default_rng(6)
    x = _zeros_and_negative_windows(rng, np.float64)
    pool = POOLS["k3"]

    def inner_pair() -> list[Module]:
        conv, relu, mp, flat, lin = conv_net(7, np.float64, pool, integer_weights=True)
        return [conv, nn.Sequential(relu, mp), flat, lin]

    def inner_first() -> list[Module]:
        conv, relu, mp, flat, lin = conv_net(7, np.float64, pool, integer_weights=True)
        return [nn.Sequential(conv, relu, mp), flat, lin]

    def across() -> list[Module]:
        conv, relu, mp, flat, lin = conv_net(7, np.float64, pool, integer_weights=True)
        return [nn.Sequential(conv, relu), mp, flat, lin]

    model, _, _ = compare_with_written(inner_pair, x, rng)
    assert _names(model[1]._order()) == ["MaxPool2d", "ReLU"]
    model, _, _ = compare_with_written(inner_first, x, rng)  # backward_params through the inner one
    assert _names(model[0]._order()) == ["Conv2d", "MaxPool2d", "ReLU"]
    model, _, _ = compare_with_written(across, x, rng)  # no swap across a Sequential's edge
    assert _names(model._order()) == ["Sequential", "MaxPool2d", "Flatten", "Linear"]
    assert _names(model[0]._order()) == ["Conv2d", "ReLU"]


@pytest.mark.parametrize("pool", list(POOLS))
def test_relu_and_pool_as_the_last_modules(pool: str) -> None:
    rng = np.random.default_rng(8)
    x = _positive_ties(rng, np.float32)

    def build() -> list[Module]:
        return conv_net(7, np.float32, POOLS[pool], integer_weights=True)[:3]

    model, _, _ = compare_with_written(build, x, rng)
    assert _names(model._order()) == ["Conv2d", "MaxPool2d", "ReLU"]


def test_backward_twice_and_after_a_new_forward_follow_the_latest_forward() -> None:
    rng = np.random.default_rng(9)
    x1, x2 = _normal(rng, np.float64), _positive_ties(rng, np.float64)
    model = nn.Sequential(*conv_net(7, np.float64, POOLS["k2"]))
    ref = conv_net(7, np.float64, POOLS["k2"])
    model.forward(x1)
    y = model.forward(x2)
    dout = _dout(rng, y.shape, np.float64)
    dx = model.backward(dout)
    _, dx_ref = written_order(ref, x2, dout)
    assert_same_bits(dx, dx_ref, "input gradient after a second forward")
