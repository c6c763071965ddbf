"""Convolution and pooling as plain loops: the readable version.

Every function here is the one a course would write on the board: one Python
loop per output index, and inside it one window of the input handled with a
single NumPy expression. Read these to see *what* is computed; the fast kernels
that the modules call (``handgrad.nn.conv`` and ``handgrad.nn.pooling``) compute
the same numbers with strided views and one matrix product, and
``tests/test_conv_kernels.py`` proves that the two agree.

All arrays are ``(N, C, H, W)``. The functions are pure: they never write into
an array they were given, and they keep no cache, so a backward function takes
the forward's inputs again. Along each axis the output size is::

    out = (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1
"""

from __future__ import annotations

import numpy as np

Pair = tuple[int, int]
# (top, bottom, left, right)
Pads = tuple[int, int, int, int]


def _out_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """Output length along one axis (the formula of the module docstring)."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def _window(y: int, x: int, kernel: Pair, stride: Pair, dilation: Pair) -> tuple[slice, slice]:
    """Row and column slices of the padded input seen by output position ``(y, x)``.

    The window starts at ``(y * stride, x * stride)`` and takes every
    ``dilation``-th pixel, ``kernel`` of them along each axis.
    """
    (kh, kw), (sh, sw), (dil_h, dil_w) = kernel, stride, dilation
    rows = slice(y * sh, y * sh + dil_h * (kh - 1) + 1, dil_h)
    cols = slice(x * sw, x * sw + dil_w * (kw - 1) + 1, dil_w)
    return rows, cols


def _pad(x: np.ndarray, pads: Pads, value: float = 0.0) -> np.ndarray:
    """``(N, C, H, W) -> (N, C, H + top + bottom, W + left + right)``, a new array."""
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _crop(xp: np.ndarray, pads: Pads) -> np.ndarray:
    """Undo :func:`_pad`: the gradient that landed on padding belongs to no input."""
    top, bottom, left, right = pads
    return xp[:, :, top : xp.shape[2] - bottom, left : xp.shape[3] - right]


# -- convolution -------------------------------------------------------------------


def conv2d_forward_naive(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: Pair = (1, 1),
    padding: Pads = (0, 0, 0, 0),
    dilation: Pair = (1, 1),
    groups: int = 1,
) -> np.ndarray:
    """2-D convolution (cross-correlation, as every framework), one output number at a time.

    ``out[n, o, y, x] = b[o] + sum(w[o] * window)``, where ``window`` is the
    ``(C/groups, KH, KW)`` block of the zero-padded input under output position
    ``(y, x)``, taken from the channels of the group that ``o`` belongs to.

    Parameters
    ----------
    x : ndarray
        Input, ``(N, C, H, W)``.
    w : ndarray
        Weights, ``(C_out, C/groups, KH, KW)``.
    b : ndarray or None
        Bias, ``(C_out,)``.
    stride, dilation : (int, int)
        Step between windows; step between the pixels of one window.
    padding : (int, int, int, int)
        Zeros added at the (top, bottom, left, right).
    groups : int
        Output channels ``[g*C_out/groups, (g+1)*C_out/groups)`` see only input
        channels ``[g*C/groups, (g+1)*C/groups)``.

    Shape
    -----
    ``(N, C, H, W) -> (N, C_out, OH, OW)``
    """
    n, _, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    top, bottom, left, right = padding
    oh = _out_size(h, kh, stride[0], top + bottom, dilation[0])
    ow = _out_size(wd, kw, stride[1], left + right, dilation[1])
    xp = _pad(x, padding)  # (N, C, Hp, Wp)
    og = c_out // groups  # output channels per group
    out = np.zeros((n, c_out, oh, ow), dtype=x.dtype)  # (N, C_out, OH, OW)
    for i in range(n):
        for o in range(c_out):
            g = o // og
            channels = slice(g * cg, (g + 1) * cg)
            for y in range(oh):
                for xx in range(ow):
                    rows, cols = _window(y, xx, (kh, kw), stride, dilation)
                    window = xp[i, channels, rows, cols]  # (C/g, KH, KW)
                    out[i, o, y, xx] = np.sum(w[o] * window)
            if b is not None:
                out[i, o] += b[o]
    return out


def conv2d_backward_naive(
    dout: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    stride: Pair = (1, 1),
    padding: Pads = (0, 0, 0, 0),
    dilation: Pair = (1, 1),
    groups: int = 1,
    with_bias: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of :func:`conv2d_forward_naive`, by the same loops.

    Each output number was ``sum(w[o] * window)``, so its gradient ``dout[n, o, y, x]``
    flows to the window as ``w[o] * dout[...]`` and to the weights as
    ``window * dout[...]``. Windows overlap, hence ``+=``.

    Parameters
    ----------
    dout : ndarray
        Gradient of the loss w.r.t. the output, ``(N, C_out, OH, OW)``.
    x, w, stride, padding, dilation, groups
        As given to the forward.
    with_bias : bool
        Whether the forward had a bias; ``db`` is None otherwise.

    Returns
    -------
    dx : ndarray
        ``(N, C, H, W)``
    dw : ndarray
        ``(C_out, C/groups, KH, KW)``
    db : ndarray or None
        ``(C_out,)``
    """
    n, _, _, _ = x.shape
    c_out, cg, kh, kw = w.shape
    _, _, oh, ow = dout.shape
    xp = _pad(x, padding)  # (N, C, Hp, Wp)
    og = c_out // groups
    dxp = np.zeros_like(xp)  # (N, C, Hp, Wp): the padding's share is cropped at the end
    dw = np.zeros_like(w)  # (C_out, C/g, KH, KW)
    db = np.zeros(c_out, dtype=dout.dtype) if with_bias else None  # (C_out,)
    for i in range(n):
        for o in range(c_out):
            g = o // og
            channels = slice(g * cg, (g + 1) * cg)
            for y in range(oh):
                for xx in range(ow):
                    rows, cols = _window(y, xx, (kh, kw), stride, dilation)
                    d = dout[i, o, y, xx]  # ()
                    dxp[i, channels, rows, cols] += w[o] * d  # (C/g, KH, KW)
                    dw[o] += xp[i, channels, rows, cols] * d  # (C/g, KH, KW)
                    if db is not None:
                        db[o] += d
    dx = _crop(dxp, padding)  # (N, C, H, W)
    return dx, dw, db


# -- max pooling ---------------------------------------------------------------------


def _first_max(window: np.ndarray, real: np.ndarray) -> tuple[int, int]:
    """``(i, j)`` of the first maximum of a ``(KH, KW)`` window in row-major order,
    among the real pixels (``real``, a ``(KH, KW)`` bool mask; padding is never chosen).

    The search starts at the first real pixel, so a window whose real pixels are
    all ``-inf`` still picks a real one (as PyTorch). A NaN counts as the maximum
    (the first NaN wins), so a NaN in the input reaches the output instead of
    being silently skipped.
    """
    cells = [(i, j) for i in range(window.shape[0]) for j in range(window.shape[1])]
    cells = [cell for cell in cells if real[cell]] or [(0, 0)]  # a dilated window may
    best = cells[0]  # read padding only: then its output is -inf and its gradient lost
    for cell in cells[1:]:
        v, m = window[cell], window[best]
        # strictly greater: an equal value later in the window never takes over
        if v > m or (np.isnan(v) and not np.isnan(m)):
            best = cell
    return best


def maxpool2d_forward_naive(
    x: np.ndarray,
    kernel: Pair,
    stride: Pair,
    padding: Pair = (0, 0),
    dilation: Pair = (1, 1),
) -> np.ndarray:
    """Max over each window's real pixels; the ``-inf`` padding is never chosen.

    Parameters
    ----------
    x : ndarray
        Input, ``(N, C, H, W)``.
    kernel, stride, dilation : (int, int)
    padding : (int, int)
        ``-inf`` added on both sides of H and of W.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, OH, OW)``
    """
    n, c, h, wd = x.shape
    oh = _out_size(h, kernel[0], stride[0], 2 * padding[0], dilation[0])
    ow = _out_size(wd, kernel[1], stride[1], 2 * padding[1], dilation[1])
    pads = (padding[0], padding[0], padding[1], padding[1])
    xp = _pad(x, pads, value=-np.inf)  # (N, C, Hp, Wp)
    real = _pad(np.ones((1, 1, h, wd), bool), pads, value=False)[0, 0]  # (Hp, Wp)
    out = np.empty((n, c, oh, ow), dtype=x.dtype)  # (N, C, OH, OW)
    for i in range(n):
        for ch in range(c):
            for y in range(oh):
                for xx in range(ow):
                    rows, cols = _window(y, xx, kernel, stride, dilation)
                    window = xp[i, ch, rows, cols]  # (KH, KW)
                    out[i, ch, y, xx] = window[_first_max(window, real[rows, cols])]
    return out


def maxpool2d_backward_naive(
    dout: np.ndarray,
    x: np.ndarray,
    kernel: Pair,
    stride: Pair,
    padding: Pair = (0, 0),
    dilation: Pair = (1, 1),
) -> np.ndarray:
    """Gradient of :func:`maxpool2d_forward_naive`: each window's to its one winner.

    Only the winning pixel affected the output, so it alone gets
    ``dout[n, c, y, x]``; on ties that is the first maximum in row-major order,
    as in the forward (PyTorch's rule), never a share among the equal pixels,
    and never a padding pixel.

    Shape
    -----
    dout ``(N, C, OH, OW)``, x ``(N, C, H, W)`` -> dx ``(N, C, H, W)``
    """
    n, c, oh, ow = dout.shape
    pads = (padding[0], padding[0], padding[1], padding[1])
    xp = _pad(x, pads, value=-np.inf)  # (N, C, Hp, Wp)
    real = _pad(np.ones((1, 1, *x.shape[2:]), bool), pads, value=False)[0, 0]  # (Hp, Wp)
    dxp = np.zeros(xp.shape, dtype=dout.dtype)  # (N, C, Hp, Wp)
    for i in range(n):
        for ch in range(c):
            for y in range(oh):
                for xx in range(ow):
                    rows, cols = _window(y, xx, kernel, stride, dilation)
                    ki, kj = _first_max(xp[i, ch, rows, cols], real[rows, cols])
                    # back from window offset (ki, kj) to the padded pixel it read
                    py = rows.start + ki * dilation[0]
                    px = cols.start + kj * dilation[1]
                    dxp[i, ch, py, px] += dout[i, ch, y, xx]
    return _crop(dxp, pads)  # (N, C, H, W)


# -- average pooling -------------------------------------------------------------------


def _avg_divisor(
    window_real: np.ndarray, kernel: Pair, count_include_pad: bool, divisor_override: int | None
) -> int:
    """What one window's sum is divided by, as in PyTorch.

    ``window_real`` is the ``(KH, KW)`` window of a mask that is 1 on real
    pixels and 0 on padding.
    """
    if divisor_override is not None:
        return divisor_override
    if count_include_pad:
        return kernel[0] * kernel[1]
    return int(window_real.sum())


def avgpool2d_forward_naive(
    x: np.ndarray,
    kernel: Pair,
    stride: Pair,
    padding: Pair = (0, 0),
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """Mean over each window, with PyTorch's choice of divisor.

    Parameters
    ----------
    x : ndarray
        Input, ``(N, C, H, W)``.
    kernel, stride : (int, int)
    padding : (int, int)
        Zeros added on both sides of H and of W.
    count_include_pad : bool
        Divide by ``KH * KW`` (True) or by the number of real, unpadded pixels
        in the window (False).
    divisor_override : int, optional
        Divide every window's sum by this instead.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, OH, OW)``
    """
    n, c, h, wd = x.shape
    oh = _out_size(h, kernel[0], stride[0], 2 * padding[0], 1)
    ow = _out_size(wd, kernel[1], stride[1], 2 * padding[1], 1)
    pads = (padding[0], padding[0], padding[1], padding[1])
    xp = _pad(x, pads)  # (N, C, Hp, Wp)
    real = _pad(np.ones((1, 1, h, wd)), pads)[0, 0]  # (Hp, Wp): 1 on the input, 0 on padding
    out = np.empty((n, c, oh, ow), dtype=x.dtype)  # (N, C, OH, OW)
    for i in range(n):
        for ch in range(c):
            for y in range(oh):
                for xx in range(ow):
                    rows, cols = _window(y, xx, kernel, stride, (1, 1))
                    div = _avg_divisor(
                        real[rows, cols], kernel, count_include_pad, divisor_override
                    )
                    out[i, ch, y, xx] = np.sum(xp[i, ch, rows, cols]) / div
    return out


def avgpool2d_backward_naive(
    dout: np.ndarray,
    in_hw: Pair,
    kernel: Pair,
    stride: Pair,
    padding: Pair = (0, 0),
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """Gradient of :func:`avgpool2d_forward_naive`: ``dout / divisor`` to every window pixel.

    The output is linear in the input, so only the input's size ``in_hw = (H, W)``
    is needed, not its values. The share that lands on padding is dropped.

    Shape
    -----
    dout ``(N, C, OH, OW)`` -> dx ``(N, C, H, W)``
    """
    n, c, oh, ow = dout.shape
    h, wd = in_hw
    pads = (padding[0], padding[0], padding[1], padding[1])
    real = _pad(np.ones((1, 1, h, wd)), pads)[0, 0]  # (Hp, Wp)
    dxp = np.zeros((n, c, *real.shape), dtype=dout.dtype)  # (N, C, Hp, Wp)
    for i in range(n):
        for ch in range(c):
            for y in range(oh):
                for xx in range(ow):
                    rows, cols = _window(y, xx, kernel, stride, (1, 1))
                    div = _avg_divisor(
                        real[rows, cols], kernel, count_include_pad, divisor_override
                    )
                    dxp[i, ch, rows, cols] += dout[i, ch, y, xx] / div  # (KH, KW)
    return _crop(dxp, pads)  # (N, C, H, W)


# -- adaptive average pooling ----------------------------------------------------------


def _adaptive_bin(i: int, size: int, out: int) -> slice:
    """Bin ``i`` of ``out`` along an axis of length ``size``, as PyTorch cuts them.

    ``[floor(i * size / out), ceil((i + 1) * size / out))``; neighbouring bins
    overlap by a pixel when ``size`` is not a multiple of ``out``.
    """
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)  # ceil division with integers only, no float rounding
    return slice(start, end)


def adaptive_avgpool2d_forward_naive(x: np.ndarray, output_size: Pair) -> np.ndarray:
    """Mean over ``output_size`` bins that tile the input (PyTorch's bins).

    Parameters
    ----------
    x : ndarray
        Input, ``(N, C, H, W)``.
    output_size : (int, int)
        ``(OH, OW)``; ``(1, 1)`` is global average pooling.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, OH, OW)``
    """
    n, c, h, wd = x.shape
    oh, ow = output_size
    out = np.empty((n, c, oh, ow), dtype=x.dtype)  # (N, C, OH, OW)
    for i in range(n):
        for ch in range(c):
            for y in range(oh):
                for xx in range(ow):
                    rows, cols = _adaptive_bin(y, h, oh), _adaptive_bin(xx, wd, ow)
                    out[i, ch, y, xx] = np.mean(x[i, ch, rows, cols])
    return out


def adaptive_avgpool2d_backward_naive(dout: np.ndarray, in_hw: Pair) -> np.ndarray:
    """Gradient of :func:`adaptive_avgpool2d_forward_naive`: ``dout / bin area`` to the bin.

    Shape
    -----
    dout ``(N, C, OH, OW)`` -> dx ``(N, C, H, W)`` with ``(H, W) = in_hw``
    """
    n, c, oh, ow = dout.shape
    h, wd = in_hw
    dx = np.zeros((n, c, h, wd), dtype=dout.dtype)  # (N, C, H, W)
    for i in range(n):
        for ch in range(c):
            for y in range(oh):
                for xx in range(ow):
                    rows, cols = _adaptive_bin(y, h, oh), _adaptive_bin(xx, wd, ow)
                    area = (rows.stop - rows.start) * (cols.stop - cols.start)
                    # bins overlap when H is not a multiple of OH, hence +=
                    dx[i, ch, rows, cols] += dout[i, ch, y, xx] / area  # (bin_h, bin_w)
    return dx
