"""A convolution and the max-pooling after it, fused: the GEMM writes its rows in pooling order.

``Sequential`` runs ``Conv2d`` followed by a ``MaxPool2d`` whose windows tile the
image (stride = kernel, no padding, no dilation) as one :class:`ConvMaxPool`;
the modules themselves are unchanged, and alone they run their own kernels.

The trick is the order of the im2col rows. The plain convolution makes one row
per output pixel in raster order, so the pool reads each window's ``p x q``
candidates through strided views. Here the rows go in *pooling order*: image,
then the position ``(a, b)`` inside the pooling window, then the window
``(ph, pw)``. A GEMM does not care what order its rows come in, so its output is
``p * q`` contiguous slabs per image, slab ``(a, b)`` holding candidate ``(a, b)``
of every window, and the max is an elementwise maximum of contiguous arrays
(3.7x faster than over strided views, measured by ``benchmarks/bench_cnn.py
--profile``). The backward pass routes each window's gradient into the slab of
its winner, again contiguously, and the weight gradient is the same product
``dslabs.T @ cols``, whatever the row order. Conv outputs that no window covers
(the last row and column of LeNet's 11x11 second convolution under a 2x2 pool)
are never computed: their gradient would be zero and their value is never used.

The results equal those of the two modules run one after the other (the tests
check it, ties and NaN included); the pooled output, like every 2-D layer's,
is an ``(N, C, H, W)`` view of channels-last memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from handgrad import _parallel
from handgrad._parallel import Scratch, map_chunks, scratch
from handgrad.nn._spatial import Pair, check_4d, crop_nhwc, pad_nhwc, to_nchw, to_nhwc
from handgrad.nn._validation import check_dtype
from handgrad.nn.activations import ReLU
from handgrad.nn.conv import Conv2d, conv_geometry, unpack_weight_grads, weight_matrix
from handgrad.nn.module import Module
from handgrad.nn.pooling import (
    MaxPool2d,
    max_with_arg,
    maxpool_cache,
    pool_geometry,
    route_to_winners,
)


def fusable(conv: Module, pool: Module) -> bool:
    """True when ``conv`` then ``pool`` may run as one :class:`ConvMaxPool`."""
    return (
        type(conv) is Conv2d
        and type(pool) is MaxPool2d
        and conv.groups == 1
        and pool.padding == (0, 0)
        and pool.dilation == (1, 1)
        and pool.stride == pool.kernel_size
    )


def pooled_view(xp: np.ndarray, start: Pair, pooled_hw: Pair, pool: Pair, step: Pair) -> np.ndarray:
    """The ``(n, p, q, PH, PW, C)`` view of ``xp`` ``(n, Hp, Wp, C)`` in pooling order.

    Element ``[n, a, b, ph, pw, c]`` is ``xp[n, y, x, c]`` with
    ``y = start[0] + (ph*p + a) * step[0]`` and likewise ``x``: the pixels that
    kernel offset ``start`` reads for the convolution outputs of window
    ``(ph, pw)``, position ``(a, b)``, when the convolution's stride is ``step``.
    A slice, split and transposed: no copy, and writeable.
    """
    n, c = xp.shape[0], xp.shape[3]
    (ph, pw), (p, q), (sh, sw) = pooled_hw, pool, step
    rows = xp[:, start[0] : start[0] + ph * p * sh : sh, start[1] : start[1] + pw * q * sw : sw]
    return rows.reshape(n, ph, p, pw, q, c).transpose(0, 2, 4, 1, 3, 5)


def pooled_windows(
    xp: np.ndarray, kernel: Pair, pooled_hw: Pair, pool: Pair, stride: Pair, dilation: Pair
) -> np.ndarray:
    """Every convolution window in pooling order: ``(n, p, q, PH, PW, KH, KW, C)``.

    Element ``[n, a, b, ph, pw, i, j, c]`` is
    ``xp[n, (ph*p + a)*sh + i*dh, (pw*q + b)*sw + j*dw, c]`` (as :func:`pooled_view`
    for offset ``(i, j)``). A strided view, no copy.
    """
    sn, sy, sx, sc = xp.strides
    (p, q), (sh, sw), (dh, dw) = pool, stride, dilation
    shape = (xp.shape[0], p, q, *pooled_hw, *kernel, xp.shape[3])
    strides = (sn, sy * sh, sx * sw, sy * sh * p, sx * sw * q, sy * dh, sx * dw, sc)
    return np.lib.stride_tricks.as_strided(xp, shape, strides, writeable=False)


# OpenBLAS runs a product with 10 columns (a 1-channel 3x3 convolution's patches
# and the bias) on one core at a time when two threads call it at once: padded to
# 16 zero-weighted columns, LeNet's first convolution's backward pass went from
# 4.7 to 2.6 ms at 2 threads (forward unchanged), measured by /tmp profiles of
# benchmarks/bench_cnn.py --profile.
MIN_WIDTH = 16
# Set in a window's winner (uint8; 1 << 30 in int32) when the fused ReLU zeroes the
# window: then it matches no window position.
DEAD = 128


def _patch_rows(
    xp: np.ndarray,
    width: int,
    kernel: Pair,
    pooled_hw: Pair,
    pool: Pair,
    stride: Pair,
    dilation: Pair,
    alloc: Callable[[tuple[int, ...]], np.ndarray],
) -> np.ndarray:
    """The im2col rows of ``xp`` ``(n, Hp, Wp, C)`` in pooling order, ``(M, width)``;
    the first ``KH*KW*C`` columns hold the patches, the rest is left to the caller.
    ``alloc(shape)`` gives the (uninitialised) storage.

    A patch row copies runs of ``KW * C`` numbers; when those are shorter than 16
    (a first convolution, one or three channels), the copy is cheaper column by
    column into transposed storage, and the array returned is the transpose of a
    ``(width, M)`` array (NumPy hands both layouts to BLAS without a copy).
    Measured for LeNet's first convolution, per chunk of 32 images: 0.15 ms
    instead of 0.51 ms.
    """
    (kh, kw), c, n = kernel, xp.shape[3], xp.shape[0]
    m = n * pool[0] * pool[1] * pooled_hw[0] * pooled_hw[1]
    if kw * c >= 16:
        cols = alloc((m, width))
        patches = cols[:, : kh * kw * c].reshape(n, *pool, *pooled_hw, kh, kw, c)  # a view
        patches[...] = pooled_windows(xp, kernel, pooled_hw, pool, stride, dilation)
        return cols
    cols_t = alloc((width, m))
    for i in range(kh):
        for j in range(kw):
            view = pooled_view(xp, (i * dilation[0], j * dilation[1]), pooled_hw, pool, stride)
            for ch in range(c):
                cols_t[(i * kw + j) * c + ch].reshape(view.shape[:-1])[...] = view[..., ch]
    return cols_t.T


def conv_maxpool_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: Pair,
    pads: tuple[int, int, int, int],
    dilation: Pair,
    pool: Pair,
    need_grad: bool,
    relu: bool = False,
    store: Scratch | None = None,
) -> tuple[np.ndarray, tuple[Any, ...] | None]:
    """``maxpool(conv2d(x))`` with the im2col rows in pooling order (see the module docstring);
    ``relu(maxpool(conv2d(x)))`` with ``relu``.

    With ``relu``, a window whose output is not positive (ReLU's gradient there
    is zero, NaN included) gets :data:`DEAD` added to its winner in the cache, so
    that the backward pass routes its gradient nowhere, without a pass of its own.

    Shape: x ``(N, C, H, W)``, w ``(C_out, C, KH, KW)`` -> ``(N, C_out, PH, PW)``
    with ``PH = OH // p`` (``OH`` the convolution's output height), and the cache
    for :func:`conv_maxpool_backward` (None unless ``need_grad``). With a ``store``
    (a dict the caller keeps), the im2col rows, the GEMM's output and the winners
    reuse its buffers from the last call (see :func:`handgrad._parallel.scratch`).
    """
    n, c, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    out_hw = conv_geometry((h, wd), (kh, kw), stride, pads, dilation, "Conv2d.forward")
    pooled_hw = pool_geometry(out_hw, pool, pool, (0, 0), (1, 1), "MaxPool2d.forward")
    p, q = pool
    k = kh * kw * c
    w_mat = weight_matrix(w, b)  # (C_out, KH*KW*C [+ 1]): bias against a ones column
    if w_mat.shape[1] < MIN_WIDTH:  # zero columns: see MIN_WIDTH
        w_mat = np.concatenate([w_mat, np.zeros((c_out, MIN_WIDTH - w_mat.shape[1]), x.dtype)], 1)
    out = np.empty((n, *pooled_hw, c_out), dtype=x.dtype)  # (N, PH, PW, C_out)
    arg_type = np.dtype(np.uint8 if p * q <= DEAD else np.int32)
    arg = scratch(store, "arg", out.shape, arg_type) if need_grad else None  # read by backward only

    def chunk(lo: int, hi: int) -> np.ndarray | None:
        xp = pad_nhwc(to_nhwc(x[lo:hi]), pads)  # (n_c, Hp, Wp, C)
        # the rows wait for the backward pass (one buffer per chunk) or die here (per thread)
        key = ("cols", lo) if need_grad else ("cols", threading.get_ident())
        cols = _patch_rows(
            xp,
            w_mat.shape[1],
            (kh, kw),
            pooled_hw,
            pool,
            stride,
            dilation,
            lambda shape: scratch(store, (key, shape), shape, x.dtype),
        )
        if b is not None:
            cols[:, k] = 1
        cols[:, k + (b is not None) :] = 0
        slabs = scratch(store, ("slabs", threading.get_ident()), (len(cols), c_out), x.dtype)
        np.matmul(cols, w_mat.T, out=slabs)
        slabs = slabs.reshape(hi - lo, p * q, *pooled_hw, c_out)
        pool_slabs(slabs, out[lo:hi], None if arg is None else arg[lo:hi], relu)
        return cols if need_grad else None

    size = _parallel.CHUNK
    cols = map_chunks(chunk, n, size)
    if not need_grad:
        return to_nchw(out), None
    padded_hw = (h + pads[0] + pads[1], wd + pads[2] + pads[3])
    geometry = (padded_hw, pads, pooled_hw, stride, dilation, pool)
    return to_nchw(out), (cols, size, arg, geometry, b is not None)


def conv_maxpool_backward(
    dout: np.ndarray,
    w: np.ndarray,
    cache: tuple[Any, ...],
    need_dx: bool = True,
    store: Scratch | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of :func:`conv_maxpool_forward`: ``(dx, dw, db)``, ``dx`` only if ``need_dx``.

    Per chunk: each window's gradient goes into its winner's slab (``dslabs``,
    rows in pooling order like ``cols``), then ``dw_mat = dslabs.T @ cols`` and,
    for ``dx``, one product per kernel offset added onto the pixels that offset
    read. The chunks' weight gradients are added in chunk order (thread-count
    independent, as :func:`handgrad.nn.conv.conv2d_backward`).
    """
    cols, size, arg, geometry, with_bias = cache
    padded_hw, pads, pooled_hw, stride, dilation, pool = geometry
    c_out, c, kh, kw = w.shape
    n = dout.shape[0]
    p, q = pool
    h, wd = padded_hw[0] - pads[0] - pads[1], padded_hw[1] - pads[2] - pads[3]
    dx = np.empty((n, h, wd, c), dtype=dout.dtype) if need_dx else None  # (N, H, W, C)

    def chunk(lo: int, hi: int) -> np.ndarray:
        d = to_nhwc(dout[lo:hi])  # (n_c, PH, PW, C_out)
        me = threading.get_ident()
        dslabs = scratch(store, ("dslabs", me), (hi - lo, p * q, *pooled_hw, c_out), dout.dtype)
        route_to_winners(d, arg[lo:hi], [dslabs[:, t] for t in range(p * q)], add=False)
        d2 = dslabs.reshape(-1, c_out)  # (M_c, C_out), rows in pooling order
        dw_mat = weight_grad(d2, cols[lo // size])
        if dx is not None:
            if any(pads):
                dxp = np.zeros((hi - lo, *padded_hw, c), dout.dtype)  # (n_c, Hp, Wp, C)
            else:
                dxp = dx[lo:hi]
                dxp[...] = 0  # pixels that no kept window read get no gradient
            raster = scratch(store, ("raster", me), d2.shape, dout.dtype)
            part = scratch(store, ("part", me), (len(d2), c), dout.dtype)  # for every offset
            add_data_grad(d2, w, dxp, pooled_hw, pool, stride, dilation, raster, part)
            if any(pads):
                dx[lo:hi] = crop_nhwc(dxp, pads)
        return dw_mat

    parts = [part[:, : kh * kw * c + with_bias] for part in map_chunks(chunk, n, size)]
    dw, db = unpack_weight_grads(parts, w.shape, with_bias)  # padding columns dropped
    return (None if dx is None else to_nchw(dx)), dw, db


def pool_slabs(slabs: np.ndarray, out: np.ndarray, arg: np.ndarray | None, relu: bool) -> None:
    """Max over the ``p*q`` slabs ``(n, p*q, PH, PW, C)`` into ``out``, winners into ``arg``;
    with ``relu``, ``max(out, 0)``, and the windows it zeroes marked :data:`DEAD`."""
    max_with_arg([slabs[:, t] for t in range(slabs.shape[1])], out, arg)
    if relu:
        np.maximum(out, out.dtype.type(0), out=out)  # NaN stays NaN, as F.relu
        if arg is not None:
            dead = np.greater(out, 0)  # ReLU's gradient mask: False for NaN, as F.relu_backward
            np.logical_not(dead, out=dead)
            flag = arg.dtype.type(DEAD if arg.dtype == np.uint8 else 1 << 30)
            np.bitwise_or(arg, np.multiply(dead, flag, dtype=arg.dtype), out=arg)


def weight_grad(d2: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``d2.T @ cols``: ``(M, C_out), (M, width) -> (C_out, width)``; as ``(cols.T @ d2).T``
    when ``cols`` is stored transposed (:func:`_patch_rows`), so no operand is read
    with a stride."""
    return (cols.T @ d2).T if cols.flags.f_contiguous else d2.T @ cols


def add_data_grad(
    d2: np.ndarray,
    w: np.ndarray,
    dxp: np.ndarray,
    pooled_hw: Pair,
    pool: Pair,
    stride: Pair,
    dilation: Pair,
    raster: np.ndarray,
    part: np.ndarray,
) -> None:
    """col2im of ``d2 @ w_mat`` onto ``dxp`` ``(n, Hp, Wp, C)``, one kernel offset at a time.

    ``d2``'s rows (pooling order) are first copied back into raster order, into
    ``raster`` ``(n * PH*p * PW*q, C_out)``. For offset ``(i, j)``,
    ``raster @ w[:, :, i, j]`` (``(M, C)``, into ``part``) is what the rows send
    back through that offset, added onto the pixels it read, a strided slice of
    ``dxp``, while still in cache: the adjoint of the forward copy, without
    ``np.add.at`` (within one offset no pixel is read twice). In raster order the
    add runs over rows of ``OW * C`` numbers (stride 1) instead of the ``C`` of a
    :func:`pooled_view`: for LeNet's second convolution, per chunk of 32 images,
    0.04 ms for the copy and 0.37 ms for the adds instead of 0.85 ms (measured
    with the pieces of ``benchmarks/bench_cnn.py --profile``).
    """
    n, c_out = dxp.shape[0], d2.shape[1]
    (ph, pw), (p, q), (sh, sw), (dh, dw) = pooled_hw, pool, stride, dilation
    oh, ow = ph * p, pw * q
    by_window = raster.reshape(n, ph, p, pw, q, c_out).transpose(0, 2, 4, 1, 3, 5)
    by_window[...] = d2.reshape(n, p, q, ph, pw, c_out)
    kh, kw = w.shape[2:]
    w_offsets = w.transpose(2, 3, 0, 1).copy()  # (KH, KW, C_out, C): contiguous per offset
    for i in range(kh):
        for j in range(kw):
            np.matmul(raster, w_offsets[i, j], out=part)
            y, x = i * dh, j * dw
            view = dxp[:, y : y + (oh - 1) * sh + 1 : sh, x : x + (ow - 1) * sw + 1 : sw]
            view += part.reshape(view.shape)


class ConvMaxPool(Module):
    """``conv`` then ``pool`` as one step (what ``Sequential`` runs for such a pair).

    Holds the two modules, whose parameters it trains; their own caches are
    cleared by a fused forward, so a stray ``conv.backward()`` cannot use a
    stale one.
    """

    def __init__(self, conv: Conv2d, pool: MaxPool2d, relu: ReLU | None = None) -> None:
        super().__init__()
        self.conv = conv
        self.pool = pool
        self.relu = relu
        self._scratch: Scratch = {}  # buffers reused from step to step
        self._cache: tuple[Any, ...] | None = None
        self._out_shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        conv, pool = self.conv, self.pool
        check_4d(x, "Conv2d.forward", conv.in_channels)
        check_dtype(x, conv.weight.dtype, "Conv2d.forward")
        out, self._cache = conv_maxpool_forward(
            x,
            conv.weight.data,
            None if conv.bias is None else conv.bias.data,
            conv.stride,
            conv._pads,
            conv.dilation,
            pool.kernel_size,
            need_grad=pool.training,
            relu=self.relu is not None,
            store=self._scratch,
        )
        conv._cache = pool._cache = None
        if self.relu is not None:
            self.relu._cache = None
        conv._in_shape, conv._out_shape, pool._out_shape = x.shape, None, None
        self._out_shape = out.shape
        return out

    def _grads(self, dout: np.ndarray, need_dx: bool) -> np.ndarray | None:
        cache = maxpool_cache(self, self._cache, self._out_shape, dout)
        dx, dw, db = conv_maxpool_backward(
            dout, self.conv.weight.data, cache, need_dx, self._scratch
        )
        self.conv.weight.grad += dw
        if self.conv.bias is not None and db is not None:
            self.conv.bias.grad += db
        return dx

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = self._grads(dout, True)
        assert dx is not None
        return dx

    def backward_params(self, dout: np.ndarray) -> None:
        self._grads(dout, False)
