"""The fast convolution and pooling kernels agree with the loop references.

``handgrad.nn.reference`` is the readable version; ``handgrad.nn.conv`` and
``handgrad.nn.pooling`` are the fast ones the modules call. Here: value and
gradient agreement over a grid of geometries (float64), the references against
PyTorch, ``col2im`` as the adjoint of ``im2col`` (hypothesis), max-pool ties and
NaN against PyTorch, batches of several chunks and threads, dtypes kept in
float32, and inputs left untouched.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from handgrad._parallel import CHUNK, get_num_threads, set_num_threads
from handgrad.nn import reference as ref
from handgrad.nn._spatial import output_size
from handgrad.nn.conv import (
    col2im,
    conv2d_backward,
    conv2d_data_grad,
    conv2d_forward,
    im2col,
    resolve_padding,
)
from handgrad.nn.pooling import (
    adaptive_avgpool2d_backward,
    adaptive_avgpool2d_forward,
    avgpool2d_backward,
    avgpool2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from tests.conftest import TOLERANCES

# Fast and naive kernels differ only in summation order: float64 agrees to ~1e-15.
TIGHT = {"rtol": 1e-12, "atol": 1e-12}
Pair = tuple[int, int]
Pads = tuple[int, int, int, int]


def _close(actual: np.ndarray | None, expected: np.ndarray | None, what: str, **tol: Any) -> None:
    assert actual is not None and expected is not None, what
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, **(tol or TIGHT), err_msg=what)


def _channels_last(a: np.ndarray) -> np.ndarray:
    """The same values, ``(N, C, H, W)`` shape, ``(N, H, W, C)`` memory (what layers pass on)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


# -- convolution: fast == naive -------------------------------------------------------

# (name, N, C, C_out, H, W, kernel, groups)
CONV_SHAPES = [
    ("square", 2, 3, 4, 7, 7, (3, 3), 1),
    ("batch1-rect", 1, 2, 3, 6, 9, (2, 3), 1),
    ("groups2", 2, 4, 6, 5, 8, (3, 2), 2),
    ("groups3", 1, 6, 3, 7, 5, (1, 3), 3),
    ("1x1", 2, 3, 2, 4, 5, (1, 1), 1),
]
STRIDES = [(1, 1), (2, 3), (3, 2)]
# int, pair, "valid", "same" (odd or even total: extra pixel at the bottom/right),
# and raw (top, bottom, left, right) pads for the asymmetric case
PADDINGS: list[Any] = ["valid", 1, (2, 1), "same", (0, 1, 2, 0)]
DILATIONS = [(1, 1), (2, 2)]


def _conv_cases() -> list[Any]:
    cases = []
    for shape, stride, padding, dilation in itertools.product(
        CONV_SHAPES, STRIDES, PADDINGS, DILATIONS
    ):
        name, _, _, _, h, w, kernel, _ = shape
        if padding == "same" and stride != (1, 1):
            continue  # refused by resolve_padding (as by PyTorch)
        pads = (
            padding
            if isinstance(padding, tuple) and len(padding) == 4
            else resolve_padding(padding, kernel, stride, dilation, "test")
        )
        oh = output_size(h, kernel[0], stride[0], pads[0] + pads[1], dilation[0])
        ow = output_size(w, kernel[1], stride[1], pads[2] + pads[3], dilation[1])
        if oh < 1 or ow < 1:
            continue
        cid = f"{name}-s{stride}-p{padding}-d{dilation}".replace(" ", "")
        cases.append(pytest.param(shape, stride, pads, dilation, id=cid))
    return cases


def _conv_inputs(
    shape: tuple[Any, ...], rng: np.random.Generator, dtype: type = np.float64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _, n, c, c_out, h, w, kernel, groups = shape
    x: np.ndarray = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt: np.ndarray = rng.standard_normal((c_out, c // groups, *kernel)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    return x, wt, b


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("shape", "stride", "pads", "dilation"), _conv_cases())
def test_conv_fast_matches_naive(
    shape: tuple[Any, ...], stride: Pair, pads: Pads, dilation: Pair, bias: bool
) -> None:
    rng = np.random.default_rng(0)
    groups = shape[-1]
    x, w, b_full = _conv_inputs(shape, rng)
    b = b_full if bias else None

    out, cache = conv2d_forward(x, w, b, stride, pads, dilation, groups)
    expected = ref.conv2d_forward_naive(x, w, b, stride, pads, dilation, groups)
    _close(out, expected, "out")

    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, w, cache)
    edx, edw, edb = ref.conv2d_backward_naive(dout, x, w, stride, pads, dilation, groups, bias)
    _close(dx, edx, "dx")
    _close(dw, edw, "dw")
    if bias:
        _close(db, edb, "db")
    else:
        assert db is None and edb is None


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: s[0])
def test_conv_backward_without_dx(shape: tuple[Any, ...]) -> None:
    rng = np.random.default_rng(1)
    groups = shape[-1]
    x, w, b = _conv_inputs(shape, rng)
    stride, pads, dilation = (1, 2), (1, 0, 0, 1), (1, 1)
    out, cache = conv2d_forward(x, w, b, stride, pads, dilation, groups)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, w, cache, need_dx=True)
    no_dx, dw2, db2 = conv2d_backward(dout, w, cache, need_dx=False)
    assert dx is not None and no_dx is None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


# -- pooling: fast == naive -------------------------------------------------------------

# (name, N, C, H, W, kernel)
POOL_SHAPES = [
    ("square-k2", 2, 3, 7, 7, (2, 2)),
    ("batch1-rect-k32", 1, 2, 6, 9, (3, 2)),
    ("odd-k3", 1, 2, 5, 7, (3, 3)),
    ("k13", 2, 1, 4, 5, (1, 3)),
]
POOL_STRIDES = [(1, 1), (2, 2), (3, 2)]
POOL_PADDINGS = [(0, 0), (1, 0), (1, 1)]


def _pool_cases(dilations: list[Pair]) -> list[Any]:
    cases = []
    for shape, stride, padding, dilation in itertools.product(
        POOL_SHAPES, POOL_STRIDES, POOL_PADDINGS, dilations
    ):
        name, _, _, h, w, kernel = shape
        # PyTorch's rule: padding at most half the kernel
        if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
            continue
        oh = output_size(h, kernel[0], stride[0], 2 * padding[0], dilation[0])
        ow = output_size(w, kernel[1], stride[1], 2 * padding[1], dilation[1])
        if oh < 1 or ow < 1:
            continue
        cid = f"{name}-s{stride}-p{padding}-d{dilation}".replace(" ", "")
        cases.append(pytest.param(shape, stride, padding, dilation, id=cid))
    return cases


def _pool_input(shape: tuple[Any, ...], rng: np.random.Generator, ties: bool) -> np.ndarray:
    _, n, c, h, w, _ = shape
    if ties:  # three values only: most windows hold a tie for the maximum
        return rng.integers(0, 3, (n, c, h, w)).astype(np.float64)
    return rng.standard_normal((n, c, h, w))


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize(("shape", "stride", "padding", "dilation"), _pool_cases([(1, 1), (2, 2)]))
def test_maxpool_fast_matches_naive(
    shape: tuple[Any, ...], stride: Pair, padding: Pair, dilation: Pair, ties: bool
) -> None:
    rng = np.random.default_rng(2)
    kernel = shape[-1]
    x = _pool_input(shape, rng, ties)
    out, cache = maxpool2d_forward(x, kernel, stride, padding, dilation)
    _close(out, ref.maxpool2d_forward_naive(x, kernel, stride, padding, dilation), "out")
    out_eval, no_cache = maxpool2d_forward(x, kernel, stride, padding, dilation, need_grad=False)
    assert no_cache is None
    np.testing.assert_array_equal(out_eval, out)
    dout = rng.standard_normal(out.shape)
    assert cache is not None
    dx = maxpool2d_backward(dout, cache)
    _close(dx, ref.maxpool2d_backward_naive(dout, x, kernel, stride, padding, dilation), "dx")


@pytest.mark.parametrize(
    ("count_include_pad", "divisor_override"),
    [(True, None), (False, None), (True, 5)],
    ids=["include-pad", "exclude-pad", "divisor5"],
)
@pytest.mark.parametrize(("shape", "stride", "padding", "dilation"), _pool_cases([(1, 1)]))
def test_avgpool_fast_matches_naive(
    shape: tuple[Any, ...],
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    count_include_pad: bool,
    divisor_override: int | None,
) -> None:
    rng = np.random.default_rng(3)
    kernel = shape[-1]
    x = _pool_input(shape, rng, ties=False)
    args = (kernel, stride, padding, count_include_pad, divisor_override)
    out, cache = avgpool2d_forward(x, *args)
    _close(out, ref.avgpool2d_forward_naive(x, *args), "out")
    dout = rng.standard_normal(out.shape)
    dx = avgpool2d_backward(dout, cache)
    _close(dx, ref.avgpool2d_backward_naive(dout, x.shape[2:], *args), "dx")


@pytest.mark.parametrize("out_hw", [(1, 1), (2, 3), (3, 2), (4, 4), (7, 5), (9, 6)])
@pytest.mark.parametrize("in_hw", [(7, 5), (4, 4), (3, 6)])
def test_adaptive_avgpool_fast_matches_naive(in_hw: Pair, out_hw: Pair) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, *in_hw))
    out = adaptive_avgpool2d_forward(x, out_hw)
    _close(out, ref.adaptive_avgpool2d_forward_naive(x, out_hw), "out")
    dout = rng.standard_normal(out.shape)
    dx = adaptive_avgpool2d_backward(dout, in_hw)
    _close(dx, ref.adaptive_avgpool2d_backward_naive(dout, in_hw), "dx")


# -- the references themselves against PyTorch ------------------------------------------


def _torch_grads(fn: Any, *arrays: np.ndarray, dout: np.ndarray) -> list[np.ndarray]:
    """``fn(*tensors)`` and the gradient of ``sum(out * dout)`` w.r.t. every input."""
    torch = pytest.importorskip("torch")
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward(torch.from_numpy(dout))
    return [out.detach().numpy(), *(t.grad.numpy() for t in ts)]


@pytest.mark.parametrize(
    ("stride", "pads", "dilation", "groups"),
    [
        ((1, 1), (0, 0, 0, 0), (1, 1), 1),
        ((2, 1), (1, 0, 2, 1), (1, 2), 3),
        ((1, 3), (1, 1, 0, 0), (2, 1), 1),
    ],
)
def test_conv_reference_matches_torch(
    stride: Pair, pads: Pads, dilation: Pair, groups: int
) -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 7))
    w = rng.standard_normal((6, 3 // groups, 3, 2))
    b = rng.standard_normal(6)
    out = ref.conv2d_forward_naive(x, w, b, stride, pads, dilation, groups)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = ref.conv2d_backward_naive(dout, x, w, stride, pads, dilation, groups)
    top, bottom, left, right = pads

    def conv(xt: Any, wt: Any, bt: Any) -> Any:
        xt = F.pad(xt, (left, right, top, bottom))
        return F.conv2d(xt, wt, bt, stride=stride, dilation=dilation, groups=groups)

    expected = _torch_grads(conv, x, w, b, dout=dout)
    tol = TOLERANCES[np.float64]
    for name, got, want in zip(("out", "dx", "dw", "db"), (out, dx, dw, db), expected, strict=True):
        _close(got, want, name, **tol)


@pytest.mark.parametrize(
    ("kernel", "dilation"), [((3, 3), (1, 1)), ((2, 4), (1, 1)), ((2, 3), (2, 3))]
)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
def test_same_padding_matches_torch(kernel: Pair, dilation: Pair) -> None:
    # the fast-vs-naive grid takes resolve_padding's pads on trust; check them here
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 2, 5, 6))
    w = rng.standard_normal((3, 2, *kernel))
    pads = resolve_padding("same", kernel, (1, 1), dilation, "test")
    out, cache = conv2d_forward(x, w, None, (1, 1), pads, dilation)
    assert out.shape[2:] == x.shape[2:]
    dout = rng.standard_normal(out.shape)
    dx, dw, _ = conv2d_backward(dout, w, cache)

    def conv(xt: Any, wt: Any) -> Any:
        return torch.nn.functional.conv2d(xt, wt, padding="same", dilation=dilation)

    expected = _torch_grads(conv, x, w, dout=dout)
    tol = TOLERANCES[np.float64]
    for name, got, want in zip(("out", "dx", "dw"), (out, dx, dw), expected, strict=True):
        _close(got, want, name, **tol)


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("max", {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1), "dilation": (1, 2)}),
        ("max", {"kernel_size": (3, 3), "stride": (1, 1), "padding": (1, 0), "dilation": (2, 1)}),
        ("avg", {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1)}),
        (
            "avg",
            {
                "kernel_size": (3, 3),
                "stride": (2, 2),
                "padding": (1, 1),
                "count_include_pad": False,
            },
        ),
        (
            "avg",
            {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0), "divisor_override": 4},
        ),
        ("adaptive", {"output_size": (3, 4)}),
        ("adaptive", {"output_size": (1, 1)}),
    ],
)
def test_pool_reference_matches_torch(kind: str, kwargs: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 7, 6))
    if kind == "max":
        args: tuple[Any, ...] = (
            kwargs["kernel_size"],
            kwargs["stride"],
            kwargs["padding"],
            kwargs["dilation"],
        )
        out = ref.maxpool2d_forward_naive(x, *args)
        dout = rng.standard_normal(out.shape)
        dx = ref.maxpool2d_backward_naive(dout, x, *args)
        expected = _torch_grads(lambda t: F.max_pool2d(t, **kwargs), x, dout=dout)
    elif kind == "avg":
        args = (
            kwargs["kernel_size"],
            kwargs["stride"],
            kwargs["padding"],
            kwargs.get("count_include_pad", True),
            kwargs.get("divisor_override"),
        )
        out = ref.avgpool2d_forward_naive(x, *args)
        dout = rng.standard_normal(out.shape)
        dx = ref.avgpool2d_backward_naive(dout, x.shape[2:], *args)
        expected = _torch_grads(lambda t: F.avg_pool2d(t, **kwargs), x, dout=dout)
    else:
        out = ref.adaptive_avgpool2d_forward_naive(x, kwargs["output_size"])
        dout = rng.standard_normal(out.shape)
        dx = ref.adaptive_avgpool2d_backward_naive(dout, x.shape[2:])
        expected = _torch_grads(lambda t: F.adaptive_avg_pool2d(t, **kwargs), x, dout=dout)
    tol = TOLERANCES[np.float64]
    _close(out, expected[0], "out", **tol)
    _close(dx, expected[1], "dx", **tol)


# -- col2im is the adjoint of im2col ------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 2),
    hp=st.integers(1, 9),
    wp=st.integers(1, 9),
    c=st.integers(1, 3),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    seed=st.integers(0, 2**32 - 1),
)
def test_col2im_is_adjoint_of_im2col(
    n: int, hp: int, wp: int, c: int, kernel: Pair, stride: Pair, dilation: Pair, seed: int
) -> None:
    out_hw = (
        output_size(hp, kernel[0], stride[0], 0, dilation[0]),
        output_size(wp, kernel[1], stride[1], 0, dilation[1]),
    )
    assume(out_hw[0] >= 1 and out_hw[1] >= 1)
    rng = np.random.default_rng(seed)
    xp = rng.standard_normal((n, hp, wp, c))  # (N, Hp, Wp, C), already padded
    cols = im2col(xp, kernel, out_hw, stride, dilation)  # (N*OH*OW, KH*KW*C)
    assert cols.shape == (n * out_hw[0] * out_hw[1], kernel[0] * kernel[1] * c)
    y = rng.standard_normal(cols.shape)
    back = col2im(y, xp.shape, kernel, out_hw, stride, dilation)  # (N, Hp, Wp, C)
    assert back.shape == xp.shape
    lhs = float(np.sum(cols * y))  # <im2col(x), y>
    rhs = float(np.sum(xp * back))  # <x, col2im(y)>
    # the rounding of either sum is bounded by its sum of absolute terms
    scale = float(np.sum(np.abs(cols) * np.abs(y)))
    assert abs(lhs - rhs) <= 1e-10 * scale


# -- max-pool ties and NaN against PyTorch --------------------------------------------------


def _torch_maxpool(
    x: np.ndarray, dout: np.ndarray, kernel: Pair, stride: Pair, padding: Pair = (0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    torch = pytest.importorskip("torch")
    out, dx = _torch_grads(
        lambda t: torch.nn.functional.max_pool2d(t, kernel, stride, padding), x, dout=dout
    )
    return out, dx


def _fast_maxpool(
    x: np.ndarray, dout: np.ndarray, kernel: Pair, stride: Pair, padding: Pair = (0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    out, cache = maxpool2d_forward(x, kernel, stride, padding)
    assert cache is not None
    return out, maxpool2d_backward(dout, cache)


def test_maxpool_constant_image_gradient_goes_to_first_pixel_of_each_window() -> None:
    x = np.full((2, 3, 6, 8), 0.5)
    out, cache = maxpool2d_forward(x, (2, 2), (2, 2))
    dout = np.arange(1.0, out.size + 1).reshape(out.shape)
    assert cache is not None
    dx = maxpool2d_backward(dout, cache)
    expected = np.zeros_like(x)
    expected[:, :, ::2, ::2] = dout  # the top-left pixel of every 2x2 window, nothing else
    np.testing.assert_array_equal(dx, expected)
    torch_out, torch_dx = _torch_maxpool(x, dout, (2, 2), (2, 2))
    np.testing.assert_array_equal(out, torch_out)
    np.testing.assert_array_equal(dx, torch_dx)


def test_maxpool_relu_zeros_match_torch() -> None:
    rng = np.random.default_rng(7)
    # after a ReLU most windows are all zeros: ties everywhere
    x = np.maximum(rng.standard_normal((2, 4, 8, 6)) - 1.0, 0.0)
    assert (x == 0).mean() > 0.7
    out, cache = maxpool2d_forward(x, (2, 2), (2, 2))
    # integer gradients: sums are exact, so equality tests routing, not rounding
    dout = rng.integers(1, 10, out.shape).astype(np.float64)
    assert cache is not None
    dx = maxpool2d_backward(dout, cache)
    n_windows = out.size
    assert np.count_nonzero(dx) == n_windows  # one input per window, disjoint windows
    torch_out, torch_dx = _torch_maxpool(x, dout, (2, 2), (2, 2))
    np.testing.assert_array_equal(out, torch_out)
    np.testing.assert_array_equal(dx, torch_dx)


@pytest.mark.parametrize(
    ("stride", "padding"), [((1, 1), (0, 0)), ((2, 2), (0, 0)), ((2, 1), (1, 1)), ((1, 2), (1, 0))]
)
@pytest.mark.parametrize("image", ["constant", "binary"])
def test_maxpool_overlapping_ties_match_torch(stride: Pair, padding: Pair, image: str) -> None:
    rng = np.random.default_rng(8)
    shape = (2, 2, 7, 6)
    x = np.zeros(shape) if image == "constant" else rng.integers(0, 2, shape).astype(np.float64)
    fast_out, _ = maxpool2d_forward(x, (3, 3), stride, padding)
    dout = rng.integers(-9, 10, fast_out.shape).astype(np.float64)
    out, dx = _fast_maxpool(x, dout, (3, 3), stride, padding)
    torch_out, torch_dx = _torch_maxpool(x, dout, (3, 3), stride, padding)
    np.testing.assert_array_equal(out, torch_out)
    np.testing.assert_array_equal(dx, torch_dx)


def test_maxpool_nan_propagates_like_torch() -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 2, 6, 6))
    # at most one NaN per 2x2 window, some windows none
    x[0, 0, 0, 1] = x[0, 1, 3, 3] = x[1, 0, 4, 0] = x[1, 1, 5, 5] = np.nan
    dout = rng.integers(1, 10, (2, 2, 3, 3)).astype(np.float64)
    out, dx = _fast_maxpool(x, dout, (2, 2), (2, 2))
    assert np.isnan(out).sum() == 4
    out_eval, _ = maxpool2d_forward(x, (2, 2), (2, 2), need_grad=False)
    torch_out, torch_dx = _torch_maxpool(x, dout, (2, 2), (2, 2))
    np.testing.assert_array_equal(out, torch_out)  # NaN in the same places
    np.testing.assert_array_equal(out_eval, torch_out)
    np.testing.assert_array_equal(dx, torch_dx)
    # overlapping windows: every window that sees the NaN outputs NaN
    out3, _ = maxpool2d_forward(x, (3, 3), (1, 1), need_grad=False)
    torch_out3, _ = _torch_maxpool(x, np.ones(out3.shape), (3, 3), (1, 1))
    np.testing.assert_array_equal(out3, torch_out3)
    assert np.isnan(out3).any()


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"),
    [((2, 2), (2, 2), (1, 1)), ((3, 3), (1, 1), (1, 1)), ((3, 2), (2, 1), (1, 0))],
)
def test_maxpool_all_minus_inf_windows_send_their_gradient_to_a_real_pixel(
    kernel: Pair, stride: Pair, padding: Pair
) -> None:
    """A window whose real pixels are all -inf ties with its -inf padding; its gradient
    used to go to the padding (and vanish). PyTorch gives it to the window's first
    real pixel, and so do the fast kernel and the loop reference now."""
    rng = np.random.default_rng(23)
    x = np.where(rng.random((2, 2, 5, 6)) < 0.7, -np.inf, rng.standard_normal((2, 2, 5, 6)))
    x[0, 0] = -np.inf  # one whole image of -inf: every window ties with its padding
    fast_out, _ = maxpool2d_forward(x, kernel, stride, padding)
    dout = rng.integers(1, 10, fast_out.shape).astype(np.float64)
    out, dx = _fast_maxpool(x, dout, kernel, stride, padding)
    torch_out, torch_dx = _torch_maxpool(x, dout, kernel, stride, padding)
    np.testing.assert_array_equal(out, torch_out)
    np.testing.assert_array_equal(dx, torch_dx)
    np.testing.assert_array_equal(
        dx, ref.maxpool2d_backward_naive(dout, x, kernel, stride, padding)
    )
    assert dx[0, 0].sum() == dout[0, 0].sum()  # nothing lost to the padding


def test_maxpool_a_dilated_window_of_padding_only_loses_its_gradient() -> None:
    """kernel 2, dilation 2, padding 1 on a 1-pixel-high image: the first window reads
    the two padding rows and no image row. Its output is -inf and its gradient goes
    nowhere, in the fast kernel and the reference alike (PyTorch's CPU kernel reads
    out of bounds here, so it is not asked)."""
    x = np.arange(4.0).reshape(1, 1, 1, 4)
    geometry = ((2, 1), (1, 2), (1, 0), (2, 1))  # kernel, stride, padding, dilation
    out, cache = maxpool2d_forward(x, *geometry)
    assert cache is not None and np.all(out == -np.inf)
    dx = maxpool2d_backward(np.ones(out.shape), cache)
    np.testing.assert_array_equal(dx, np.zeros_like(x))
    np.testing.assert_array_equal(
        dx, ref.maxpool2d_backward_naive(np.ones(out.shape), x, *geometry)
    )


# -- NaN, batch chunks, threads ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"), [((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (1, 1))]
)
def test_maxpool_many_nans_match_naive(kernel: Pair, stride: Pair, padding: Pair) -> None:
    # several NaNs per window: the first NaN in row-major order takes the gradient
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 2, 6, 7))
    x[rng.random(x.shape) < 0.4] = np.nan
    out, cache = maxpool2d_forward(x, kernel, stride, padding)
    assert cache is not None
    _close(out, ref.maxpool2d_forward_naive(x, kernel, stride, padding), "out")
    dout = rng.integers(1, 10, out.shape).astype(np.float64)
    dx = maxpool2d_backward(dout, cache)
    _close(dx, ref.maxpool2d_backward_naive(dout, x, kernel, stride, padding), "dx")


@pytest.mark.parametrize("stride", [(2, 2), (1, 1)], ids=["disjoint", "overlapping"])
def test_maxpool_non_finite_dout_reaches_only_the_winner(stride: Pair) -> None:
    rng = np.random.default_rng(19)
    x = rng.standard_normal((1, 2, 4, 4))
    out, cache = maxpool2d_forward(x, (2, 2), stride)
    assert cache is not None
    dout = rng.standard_normal(out.shape)
    dout[0, 0, 0, 0], dout[0, 1, 1, 1] = np.inf, np.nan  # an overflowed upstream gradient
    with np.errstate(invalid="ignore"):
        dx = maxpool2d_backward(dout, cache)
    expected = ref.maxpool2d_backward_naive(dout, x, (2, 2), stride)
    np.testing.assert_array_equal(np.isfinite(dx), np.isfinite(expected))
    _close(dx, expected, "dx")


def _chunked_run(x: np.ndarray, w: np.ndarray, dout_seed: int) -> list[np.ndarray]:
    """Conv (groups 1 and 2) and max pool, forward and backward, on a batch of several chunks."""
    rng = np.random.default_rng(dout_seed)
    arrays = []
    for groups in (1, 2):
        wg = w[:, : x.shape[1] // groups]
        out, cache = conv2d_forward(x, wg, w[:, 0, 0, 0], (1, 2), (1, 0, 0, 1), (1, 1), groups)
        dout = rng.standard_normal(out.shape)
        arrays += [out, *(g for g in conv2d_backward(dout, wg, cache) if g is not None)]
    out, mcache = maxpool2d_forward(x, (3, 2), (1, 2), (1, 1))
    assert mcache is not None
    arrays += [out, maxpool2d_backward(rng.standard_normal(out.shape), mcache)]
    return arrays


def test_batches_of_several_chunks_match_naive() -> None:
    rng = np.random.default_rng(14)
    n = 2 * CHUNK + 3  # two full chunks and a short one
    x = rng.standard_normal((n, 2, 4, 5))
    w = rng.standard_normal((4, 2, 2, 2))
    got = _chunked_run(x, w, dout_seed=15)
    rng = np.random.default_rng(15)
    expected = []
    for groups in (1, 2):
        wg = w[:, : x.shape[1] // groups]
        args = ((1, 2), (1, 0, 0, 1), (1, 1), groups)
        out = ref.conv2d_forward_naive(x, wg, w[:, 0, 0, 0], *args)
        dout = rng.standard_normal(out.shape)
        expected += [
            out,
            *(g for g in ref.conv2d_backward_naive(dout, x, wg, *args) if g is not None),
        ]
    out = ref.maxpool2d_forward_naive(x, (3, 2), (1, 2), (1, 1))
    dx = ref.maxpool2d_backward_naive(rng.standard_normal(out.shape), x, (3, 2), (1, 2), (1, 1))
    expected += [out, dx]
    names = ["conv", "conv.dx", "conv.dw", "conv.db"] * 2 + ["maxpool", "maxpool.dx"]
    assert len(got) == len(expected) == len(names)
    for name, a, e in zip(names, got, expected, strict=True):
        _close(a, e, name)


def test_threads_give_the_same_bits() -> None:
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2 * CHUNK + 3, 2, 4, 5))
    w = rng.standard_normal((4, 2, 2, 2))
    one = _chunked_run(x, w, dout_seed=17)
    before = get_num_threads()
    set_num_threads(3)
    try:
        three = _chunked_run(x, w, dout_seed=17)
    finally:
        set_num_threads(before)
    for a, b in zip(one, three, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_data_grad_is_col2im_of_dcols(groups: int) -> None:
    # the backward's offset-by-offset product equals col2im(dout @ w_mat), the textbook form
    rng = np.random.default_rng(18)
    n, c, c_out, kernel = 2, 4, 6, (3, 2)
    padded_shape, out_hw, stride, dilation = (n, 7, 8, c), (3, 6), (2, 1), (1, 2)
    w = rng.standard_normal((c_out, c // groups, *kernel))
    d2 = rng.standard_normal((n * out_hw[0] * out_hw[1], c_out))  # (M, C_out)
    got = conv2d_data_grad(d2, w, padded_shape, out_hw, stride, dilation, groups)
    og, cg = c_out // groups, c // groups
    expected = np.empty(padded_shape)
    for g in range(groups):
        w_mat = (
            w[g * og : (g + 1) * og].transpose(0, 2, 3, 1).reshape(og, -1)
        )  # (C_out/g, KH*KW*C/g)
        dcols = d2[:, g * og : (g + 1) * og] @ w_mat  # (M, KH*KW*C/g)
        shape_g = (n, *padded_shape[1:3], cg)
        expected[..., g * cg : (g + 1) * cg] = col2im(
            dcols, shape_g, kernel, out_hw, stride, dilation
        )
    _close(got, expected, "dxp")


# -- dtypes and untouched inputs -------------------------------------------------------------


def _run_all(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, rng: np.random.Generator, layout: Any
) -> dict[str, list[np.ndarray]]:
    """Every fast kernel, forward then backward, on ``x`` (and ``w``, ``b`` for the convs).

    Returns ``name -> [out, *gradients]``. Every ``dout`` is laid out by ``layout``
    and checked untouched after its backward.
    """
    results: dict[str, list[np.ndarray]] = {}

    def backward(name: str, out: np.ndarray, grads: Any) -> None:
        dout = layout(rng.standard_normal(out.shape).astype(x.dtype))
        saved = dout.copy()
        results[name] = [out, *(g for g in grads(dout) if g is not None)]
        np.testing.assert_array_equal(dout, saved, err_msg=f"{name}: dout modified")

    out, cache = conv2d_forward(x, w, b, (1, 1), (1, 0, 0, 1), (1, 1), 1)
    backward("conv", out, lambda d: conv2d_backward(d, w, cache))
    wg = w[:, :1]  # (C_out, 1, KH, KW): depthwise-like, groups = C
    out, gcache = conv2d_forward(x, wg, None, (2, 1), (1, 1, 1, 1), (1, 2), x.shape[1])
    backward("conv.groups", out, lambda d: conv2d_backward(d, wg, gcache))
    out, mcache = maxpool2d_forward(x, (3, 3), (1, 1), (1, 1))
    assert mcache is not None
    backward("maxpool", out, lambda d: [maxpool2d_backward(d, mcache)])
    out, acache = avgpool2d_forward(x, (2, 3), (2, 1), (1, 1), count_include_pad=False)
    backward("avgpool", out, lambda d: [avgpool2d_backward(d, acache)])
    for out_hw in [(1, 1), (2, 3)]:
        out = adaptive_avgpool2d_forward(x, out_hw)
        backward(f"adaptive{out_hw}", out, lambda d: [adaptive_avgpool2d_backward(d, x.shape[2:])])
    return results


def _expected_float64(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """The forward outputs of :func:`_run_all`, from the references in float64."""
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    return {
        "conv": ref.conv2d_forward_naive(x64, w64, b64, (1, 1), (1, 0, 0, 1)),
        "conv.groups": ref.conv2d_forward_naive(
            x64, w64[:, :1], None, (2, 1), (1, 1, 1, 1), (1, 2), x.shape[1]
        ),
        "maxpool": ref.maxpool2d_forward_naive(x64, (3, 3), (1, 1), (1, 1)),
        "avgpool": ref.avgpool2d_forward_naive(x64, (2, 3), (2, 1), (1, 1), False),
        "adaptive(1, 1)": ref.adaptive_avgpool2d_forward_naive(x64, (1, 1)),
        "adaptive(2, 3)": ref.adaptive_avgpool2d_forward_naive(x64, (2, 3)),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_fast_kernels_keep_dtype(dtype: type) -> None:
    rng = np.random.default_rng(10)
    x: np.ndarray = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    w: np.ndarray = rng.standard_normal((6, 3, 2, 3)).astype(dtype)
    b: np.ndarray = rng.standard_normal(6).astype(dtype)
    results = _run_all(x, w, b, rng, layout=lambda a: a)
    assert [len(r) for r in results.values()] == [4, 3, 2, 2, 2, 2]  # out and every gradient
    for name, arrays in results.items():
        assert [a.dtype for a in arrays] == [dtype] * len(arrays), name
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype is np.float32 else TIGHT
    for name, want in _expected_float64(x, w, b).items():
        _close(results[name][0], want, name, **tol)


@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
def test_fast_kernels_leave_inputs_untouched(layout: str) -> None:
    # channels-last memory is what the layers pass each other: there the kernels
    # see the caller's own memory through a view, not a copy
    lay = _channels_last if layout == "channels-last" else (lambda a: a)
    rng = np.random.default_rng(11)
    x = lay(rng.standard_normal((2, 3, 6, 5)))
    w = rng.standard_normal((6, 3, 2, 3))
    b = rng.standard_normal(6)
    saved = [a.copy() for a in (x, w, b)]
    _run_all(x, w, b, rng, layout=lay)
    for name, before, after in zip(("x", "w", "b"), saved, (x, w, b), strict=True):
        np.testing.assert_array_equal(after, before, err_msg=f"{name} modified")
