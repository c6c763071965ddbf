"""Pooling: ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``.

The kernels loop over the ``KH * KW`` offsets of a window, never over pixels:
offset ``(i, j)`` sees the strided view ``xp[:, i*dh::sh, j*dw::sw]`` of every
window at once (``handgrad.nn._spatial.offset_view``), so each step is one
vectorised NumPy operation on an ``(N, OH, OW, C)`` array. Max pooling records
which offset won (the first maximum in row-major window order, as PyTorch, so
ties are broken the same way every time) and its backward sends each window's
gradient to exactly that one input. ``handgrad.nn.reference`` has the loop
versions the tests compare against.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad._parallel import map_chunks
from handgrad.nn._spatial import (
    Pads,
    Pair,
    check_4d,
    crop_nhwc,
    offset_view,
    output_size,
    pad_nhwc,
    pair,
    to_nchw,
    to_nhwc,
)
from handgrad.nn._validation import check_same_shape
from handgrad.nn.module import Module

# -- kernels ----------------------------------------------------------------------


def pool_geometry(
    in_hw: tuple[int, int], kernel: Pair, stride: Pair, padding: Pair, dilation: Pair, where: str
) -> Pair:
    """``(OH, OW)`` of a pooling window, with PyTorch's checks and clear errors."""
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(
            f"{where}: padding {padding} must be at most half the kernel size {kernel} "
            "(as in PyTorch)"
        )
    oh = output_size(in_hw[0], kernel[0], stride[0], 2 * padding[0], dilation[0])
    ow = output_size(in_hw[1], kernel[1], stride[1], 2 * padding[1], dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{where}: a {kernel[0]}x{kernel[1]} window (dilation {dilation}) does not fit "
            f"the padded input {in_hw[0] + 2 * padding[0]}x{in_hw[1] + 2 * padding[1]} "
            f"(input {in_hw[0]}x{in_hw[1]}, padding {padding})"
        )
    return oh, ow


def windows_disjoint(kernel: Pair, stride: Pair, dilation: Pair) -> bool:
    """True when no two windows share a pixel: the stride is at least the dilated span."""
    return all(stride[a] >= dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1))


def _pads(padding: Pair) -> Pads:
    return (padding[0], padding[0], padding[1], padding[1])


def max_with_arg(views: list[np.ndarray], out: np.ndarray, arg: np.ndarray | None) -> None:
    """``out = max(views)`` elementwise, and in ``arg`` the index of the first view
    that holds the maximum (later equal values never take over), as PyTorch breaks
    ties. NaN propagates to ``out``; its ``arg`` is the first view holding a NaN.

    ``views`` are the candidates of every window, one array per window position,
    each shaped like ``out``: offset views of a padded input here, contiguous
    slabs of a convolution's output in ``handgrad.nn.fused``.
    """
    out[...] = views[0]
    if arg is None:
        for v in views[1:]:
            np.maximum(out, v, out=out)  # NaN propagates
        return
    arg[...] = 0  # winning offset
    better = np.empty(out.shape, bool)  # buffers reused by every offset
    mark = np.empty(out.shape, arg.dtype)
    # as 0/1 bytes, ``better`` multiplies a uint8 ``arg`` without a cast
    flags = better.view(np.uint8) if arg.dtype == np.uint8 else better
    for t, v in enumerate(views[1:], start=1):
        np.greater(v, out, out=better)  # strictly: an equal later value never takes over
        np.maximum(out, v, out=out)
        # arg = t where better: t exceeds every earlier offset, so a maximum does it
        # without the branchy masked copy (5x slower on random masks)
        np.multiply(flags, arg.dtype.type(t), out=mark, casting="unsafe")
        np.maximum(arg, mark, out=arg)
    if np.isnan(out).any():  # rare: give each NaN window's gradient to its first NaN
        nan_arg = np.full(out.shape, -1, np.int32)
        for t in reversed(range(len(views))):
            np.copyto(nan_arg, t, where=np.isnan(views[t]))
        np.copyto(arg, nan_arg, where=nan_arg >= 0, casting="unsafe")


def _maxpool_chunk(
    xp: np.ndarray,
    out: np.ndarray,
    arg: np.ndarray | None,
    kernel: Pair,
    stride: Pair,
    dilation: Pair,
) -> None:
    """Max-pool padded ``xp`` ``(n, Hp, Wp, C)`` into ``out`` and ``arg`` ``(n, OH, OW, C)``."""
    out_hw = out.shape[1:3]
    views = [
        offset_view(xp, t // kernel[1], t % kernel[1], out_hw, stride, dilation)
        for t in range(kernel[0] * kernel[1])
    ]  # each (n, OH, OW, C), no copies
    max_with_arg(views, out, arg)


def route_to_winners(d: np.ndarray, arg: np.ndarray, views: list[np.ndarray], add: bool) -> None:
    """The adjoint of :func:`max_with_arg`: ``views[t]`` gets ``d`` where ``arg == t``
    and zero elsewhere (``add``: adds that, for views that overlap)."""
    # d * (arg == t) is the fast mask, but inf * 0 is NaN: a non-finite d takes
    # the slower masked copy so that only the winner sees it (as PyTorch)
    finite = bool(np.isfinite(d).all())
    hit = np.empty(arg.shape, bool)  # one buffer for every position
    for t, view in enumerate(views):
        np.equal(arg, t, out=hit)
        if not add and finite:
            np.multiply(d, hit, out=view)
        elif not add:
            view[...] = 0
            np.copyto(view, d, where=hit)
        elif finite:
            view += d * hit
        else:
            view += np.where(hit, d, 0)


def first_real_offsets(
    in_hw: tuple[int, int], out_hw: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair
) -> np.ndarray:
    """``(OH, OW)``: the row-major offset of each window's first pixel that is not padding
    (0 for a dilated window that reads padding only)."""
    # offset (ki, kj) of window (oi, oj) reads padded row oi*sh + ki*dh, column oj*sw + kj*dw
    rows = np.arange(out_hw[0])[:, None] * stride[0] + np.arange(kernel[0]) * dilation[0]
    cols = np.arange(out_hw[1])[:, None] * stride[1] + np.arange(kernel[1]) * dilation[1]
    row_real = (rows >= padding[0]) & (rows < in_hw[0] + padding[0])  # (OH, KH)
    col_real = (cols >= padding[1]) & (cols < in_hw[1] + padding[1])  # (OW, KW)
    real = row_real[:, None, :, None] & col_real[None, :, None, :]  # (OH, OW, KH, KW)
    return real.reshape(*out_hw, -1).argmax(axis=2)  # the first True


def maxpool2d_forward(
    x: np.ndarray,
    kernel: Pair,
    stride: Pair,
    padding: Pair = (0, 0),
    dilation: Pair = (1, 1),
    need_grad: bool = True,
) -> tuple[np.ndarray, tuple[Any, ...] | None]:
    """Max over each window; the cache holds the winning offset of every window.

    Among equal values the first offset in row-major window order wins, and a
    padding pixel never does (as in PyTorch). NaN propagates to the output, as in
    PyTorch, and the window's gradient goes to its first NaN (PyTorch's CPU kernel
    picks the last one).
    Shape: ``(N, C, H, W) -> (N, C, OH, OW)``.
    """
    out_hw = pool_geometry(x.shape[2:], kernel, stride, padding, dilation, "maxpool2d_forward")
    n, c = x.shape[:2]
    out = np.empty((n, *out_hw, c), dtype=x.dtype)  # (N, OH, OW, C)
    arg_type = np.uint8 if kernel[0] * kernel[1] <= 256 else np.int32
    arg = np.empty(out.shape, arg_type) if need_grad else None

    def chunk(lo: int, hi: int) -> None:
        xp = pad_nhwc(to_nhwc(x[lo:hi]), _pads(padding), value=-np.inf)  # (n_c, Hp, Wp, C)
        _maxpool_chunk(
            xp, out[lo:hi], None if arg is None else arg[lo:hi], kernel, stride, dilation
        )

    map_chunks(chunk, n)
    if arg is None:
        return to_nchw(out), None
    if any(padding):
        # A window whose real pixels are all -inf ties with its padding, and the first
        # offset may be padding: its gradient would vanish. It goes to the window's
        # first real pixel instead (as PyTorch). NaN windows keep their first NaN.
        first = first_real_offsets(x.shape[2:], out_hw, kernel, stride, padding, dilation)
        np.copyto(arg, first[None, :, :, None], where=out == -np.inf, casting="unsafe")
    padded_hw = (x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
    return to_nchw(out), (arg, padded_hw, kernel, stride, padding, dilation, out_hw)


def maxpool2d_backward(dout: np.ndarray, cache: tuple[Any, ...]) -> np.ndarray:
    """Each window's gradient to its one winning input. Shape: dout -> ``(N, C, H, W)``."""
    arg, padded_hw, kernel, stride, padding, dilation, out_hw = cache
    n, c = dout.shape[:2]
    # Windows that do not overlap write each input pixel at most once; when they
    # also tile the padded input exactly, every pixel is written and no zeroing is needed.
    disjoint = windows_disjoint(kernel, stride, dilation)
    tiles = disjoint and dilation == (1, 1) and stride == kernel
    tiles = (
        tiles and out_hw[0] * stride[0] == padded_hw[0] and out_hw[1] * stride[1] == padded_hw[1]
    )
    pads = _pads(padding)
    dx = np.empty((n, padded_hw[0] - 2 * padding[0], padded_hw[1] - 2 * padding[1], c), dout.dtype)

    def chunk(lo: int, hi: int) -> None:
        d = to_nhwc(dout[lo:hi])  # (n_c, OH, OW, C)
        a = arg[lo:hi]
        if any(pads):
            dxp = np.zeros((hi - lo, *padded_hw, c), dtype=dout.dtype)  # (n_c, Hp, Wp, C)
        else:
            dxp = dx[lo:hi]
            if not tiles:
                dxp[...] = 0
        views = [
            offset_view(dxp, t // kernel[1], t % kernel[1], out_hw, stride, dilation)
            for t in range(kernel[0] * kernel[1])
        ]
        route_to_winners(d, a, views, add=not disjoint)
        if any(pads):
            dx[lo:hi] = crop_nhwc(dxp, pads)

    map_chunks(chunk, n)
    return to_nchw(dx)


def avgpool_divisor(
    in_hw: tuple[int, int],
    kernel: Pair,
    stride: Pair,
    padding: Pair,
    out_hw: Pair,
    count_include_pad: bool,
    divisor_override: int | None,
    dtype: np.dtype,
) -> np.ndarray | float:
    """What each window's sum is divided by: a number, or ``(1, OH, OW, 1)`` counts."""
    if divisor_override is not None:
        return float(divisor_override)
    if count_include_pad or not any(padding):
        return float(kernel[0] * kernel[1])
    ones = pad_nhwc(np.ones((1, *in_hw, 1), dtype), _pads(padding))
    counts = np.zeros((1, *out_hw, 1), dtype)
    for t in range(kernel[0] * kernel[1]):
        counts += offset_view(ones, t // kernel[1], t % kernel[1], out_hw, stride, (1, 1))
    return counts


def avgpool2d_forward(
    x: np.ndarray,
    kernel: Pair,
    stride: Pair,
    padding: Pair = (0, 0),
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> tuple[np.ndarray, tuple[Any, ...]]:
    """Mean over each window (zeros of the padding counted unless told otherwise).

    Shape: ``(N, C, H, W) -> (N, C, OH, OW)``.
    """
    in_hw = x.shape[2:]
    out_hw = pool_geometry(in_hw, kernel, stride, padding, (1, 1), "avgpool2d_forward")
    xp = pad_nhwc(to_nhwc(x), _pads(padding))  # (N, Hp, Wp, C)
    total = offset_view(xp, 0, 0, out_hw, stride, (1, 1)).copy()  # (N, OH, OW, C)
    for t in range(1, kernel[0] * kernel[1]):
        total += offset_view(xp, t // kernel[1], t % kernel[1], out_hw, stride, (1, 1))
    div = avgpool_divisor(
        in_hw, kernel, stride, padding, out_hw, count_include_pad, divisor_override, x.dtype
    )
    out = total / np.asarray(div, dtype=x.dtype)
    return to_nchw(out), (div, xp.shape, kernel, stride, padding, out_hw)


def avgpool2d_backward(dout: np.ndarray, cache: tuple[Any, ...]) -> np.ndarray:
    """Each window's gradient shared equally by its pixels. Shape: -> ``(N, C, H, W)``."""
    div, padded_shape, kernel, stride, padding, out_hw = cache
    share = to_nhwc(dout) / np.asarray(div, dtype=dout.dtype)  # (N, OH, OW, C)
    dxp = np.zeros(padded_shape, dtype=dout.dtype)  # (N, Hp, Wp, C)
    for t in range(kernel[0] * kernel[1]):
        offset_view(dxp, t // kernel[1], t % kernel[1], out_hw, stride, (1, 1))[...] += share
    return to_nchw(crop_nhwc(dxp, _pads(padding)))


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive bins: ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def adaptive_avgpool2d_forward(x: np.ndarray, out_hw: Pair) -> np.ndarray:
    """Mean over adaptive bins. Shape: ``(N, C, H, W) -> (N, C, OH, OW)``."""
    xt = to_nhwc(x)  # (N, H, W, C)
    n, h, w, c = xt.shape
    if out_hw == (1, 1):  # global average pooling
        return to_nchw(xt.mean(axis=(1, 2), keepdims=True))
    out = np.empty((n, *out_hw, c), dtype=x.dtype)  # (N, OH, OW, C)
    for oi, (h0, h1) in enumerate(adaptive_bins(h, out_hw[0])):
        for oj, (w0, w1) in enumerate(adaptive_bins(w, out_hw[1])):
            out[:, oi, oj, :] = xt[:, h0:h1, w0:w1, :].mean(axis=(1, 2))
    return to_nchw(out)


def adaptive_avgpool2d_backward(dout: np.ndarray, in_hw: tuple[int, int]) -> np.ndarray:
    """Gradient of :func:`adaptive_avgpool2d_forward`. Shape: -> ``(N, C, H, W)``."""
    d = to_nhwc(dout)  # (N, OH, OW, C)
    n, oh, ow, c = d.shape
    h, w = in_hw
    if (oh, ow) == (1, 1):
        return to_nchw(np.broadcast_to(d / d.dtype.type(h * w), (n, h, w, c)).copy())
    dx = np.zeros((n, h, w, c), dtype=dout.dtype)  # (N, H, W, C)
    for oi, (h0, h1) in enumerate(adaptive_bins(h, oh)):
        for oj, (w0, w1) in enumerate(adaptive_bins(w, ow)):
            area = dout.dtype.type((h1 - h0) * (w1 - w0))
            dx[:, h0:h1, w0:w1, :] += (d[:, oi, oj, :] / area)[:, None, None, :]
    return to_nchw(dx)


# -- modules ------------------------------------------------------------------------


def maxpool_cache(
    owner: Module, cache: Any, out_shape: tuple[int, ...] | None, dout: np.ndarray
) -> Any:
    """The cache a max-pool backward needs, or the error that says why there is none
    (no forward yet; a forward in eval mode), after checking ``dout``'s shape."""
    if out_shape is not None and cache is None:
        raise RuntimeError(
            "MaxPool2d.backward() after a forward in eval mode: no gradient was kept "
            "(call model.train() before the forward pass)"
        )
    cache = owner._cached(cache)
    check_same_shape(dout, out_shape or (), "MaxPool2d.backward")
    return cache


class _Pool2d(Module):
    """Shared argument handling of the fixed-window pools."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None,
        padding: int | tuple[int, int],
        dilation: int | tuple[int, int] = 1,
    ) -> None:
        super().__init__()
        where = type(self).__name__
        self.kernel_size = pair(kernel_size, "kernel_size", where)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", where)
        self.padding = pair(padding, "padding", where, minimum=0)
        self.dilation = pair(dilation, "dilation", where)
        pool_geometry(  # refuse a padding wider than half the window now, not at forward
            (10**6, 10**6), self.kernel_size, self.stride, self.padding, self.dilation, where
        )
        self._cache: tuple[Any, ...] | None = None
        self._out_shape: tuple[int, ...] | None = None

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max over each ``kernel_size`` window, moved by ``stride`` (default: the kernel size).

    Padding counts as ``-inf``. Ties go to the first maximum in row-major window
    order, which alone receives the window's gradient (as in PyTorch).

    Shape
    -----
    ``(N, C, H, W) -> (N, C, OH, OW)``, ``OH = (H + 2*padding - dilation*(KH-1) - 1) // stride + 1``
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
    ) -> None:
        super().__init__(kernel_size, stride, padding, dilation)

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_4d(x, "MaxPool2d.forward")
        pool_geometry(
            x.shape[2:],
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            "MaxPool2d.forward",
        )
        out, self._cache = maxpool2d_forward(
            x, self.kernel_size, self.stride, self.padding, self.dilation, need_grad=self.training
        )
        self._out_shape = out.shape
        return out

    def commutes_with_relu(self) -> bool:
        """True when the windows neither overlap nor reach into padding: then this
        pooling and a ReLU before it may swap places with bit-identical results
        (``Sequential`` does it)."""
        disjoint = windows_disjoint(self.kernel_size, self.stride, self.dilation)
        return disjoint and self.padding == (0, 0)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return maxpool2d_backward(dout, maxpool_cache(self, self._cache, self._out_shape, dout))

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")


class AvgPool2d(_Pool2d):
    """Mean over each ``kernel_size`` window, moved by ``stride`` (default: the kernel size).

    Parameters
    ----------
    count_include_pad : bool
        Count the zeros of the padding in the mean (default True, as PyTorch).
    divisor_override : int, optional
        Divide every window's sum by this instead.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, OH, OW)``, ``OH = (H + 2*padding - KH) // stride + 1``
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        if divisor_override is not None and (
            not isinstance(divisor_override, (int, np.integer))
            or isinstance(divisor_override, bool)
            or divisor_override < 1
        ):
            raise ValueError(
                f"AvgPool2d: divisor_override must be a positive int, got {divisor_override!r}"
            )
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_4d(x, "AvgPool2d.forward")
        pool_geometry(
            x.shape[2:], self.kernel_size, self.stride, self.padding, (1, 1), "AvgPool2d.forward"
        )
        out, self._cache = avgpool2d_forward(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.count_include_pad,
            self.divisor_override,
        )
        self._out_shape = out.shape
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._cached(self._cache)
        check_same_shape(dout, self._out_shape or (), "AvgPool2d.backward")
        return avgpool2d_backward(dout, cache)


class AdaptiveAvgPool2d(Module):
    """Mean over ``output_size`` bins that tile the input (PyTorch's bins);
    ``AdaptiveAvgPool2d(1)`` is global average pooling.

    Parameters
    ----------
    output_size : int or (int, int)
        ``(OH, OW)``; an entry may be None to keep that input size.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, OH, OW)``
    """

    def __init__(self, output_size: int | tuple[int | None, int | None]) -> None:
        super().__init__()
        items = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
        if len(items) != 2 or not all(
            v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1)
            for v in items
        ):
            raise ValueError(
                f"AdaptiveAvgPool2d: output_size must be a positive int or a pair of them "
                f"(None keeps that input size), got {output_size!r}"
            )
        self.output_size = (items[0], items[1])
        self._in_hw: tuple[int, int] | None = None
        self._out_shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_4d(x, "AdaptiveAvgPool2d.forward")
        h, w = x.shape[2:]
        out_hw = (self.output_size[0] or h, self.output_size[1] or w)
        out = adaptive_avgpool2d_forward(x, out_hw)
        self._in_hw, self._out_shape = (h, w), out.shape
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        in_hw = self._cached(self._in_hw)
        check_same_shape(dout, self._out_shape or (), "AdaptiveAvgPool2d.backward")
        return adaptive_avgpool2d_backward(dout, in_hw)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
