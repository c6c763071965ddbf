"""2-D convolution: ``Conv2d`` over fast im2col kernels that do their work in one GEMM.

The maths, for one sample, output channel ``o`` and position ``(y, x)``::

    out[o, y, x] = b[o] + sum_{c, i, j} w[o, c, i, j] * xp[c, y*sh + i*dh, x*sw + j*dw]

where ``xp`` is the zero-padded input. Gathering every window into a row (im2col)
turns the sum into a matrix product: ``cols (N*OH*OW, KH*KW*C) @ w_mat.T
(KH*KW*C, C_out)``. Backward is two more products, ``dw_mat = dout.T @ cols``
and ``dcols = dout @ w_mat``, and col2im, the adjoint of im2col, which adds
each row of ``dcols`` back onto the pixels its window came from.

``handgrad.nn.reference`` has the same convolution as plain loops, for reading;
the tests check that the two agree. The kernels here work channels-last (see
``handgrad.nn._spatial``) while the API speaks ``(N, C, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from handgrad import _parallel
from handgrad._parallel import map_chunks
from handgrad._random import as_generator
from handgrad.nn import init as initialisers
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
    windows,
)
from handgrad.nn._validation import check_dtype, check_same_shape
from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter

Initialiser = Callable[..., np.ndarray]
PaddingArg = int | tuple[int, int] | str


# -- kernels ------------------------------------------------------------------


def resolve_padding(
    padding: PaddingArg, kernel: Pair, stride: Pair, dilation: Pair, where: str
) -> Pads:
    """``(top, bottom, left, right)`` for an int, a pair, ``"valid"`` or ``"same"``.

    ``"same"`` pads ``dilation * (kernel - 1)`` in total per axis, the extra
    pixel of an even total at the bottom/right (as PyTorch), and needs stride 1.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"{where}: padding='same' needs stride 1 (as in PyTorch), got stride {stride}"
                )
            th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise ValueError(
            f"{where}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}"
        )
    ph, pw = pair(padding, "padding", where, minimum=0)
    return (ph, ph, pw, pw)


def conv_geometry(
    in_hw: tuple[int, int], kernel: Pair, stride: Pair, pads: Pads, dilation: Pair, where: str
) -> Pair:
    """``(OH, OW)``, or a clear error when the kernel does not fit the padded input."""
    oh = output_size(in_hw[0], kernel[0], stride[0], pads[0] + pads[1], dilation[0])
    ow = output_size(in_hw[1], kernel[1], stride[1], pads[2] + pads[3], dilation[1])
    if oh < 1 or ow < 1:
        span = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
        padded = (in_hw[0] + pads[0] + pads[1], in_hw[1] + pads[2] + pads[3])
        raise ValueError(
            f"{where}: the kernel spans {span[0]}x{span[1]} pixels (kernel {kernel}, dilation "
            f"{dilation}) but the padded input is only {padded[0]}x{padded[1]} "
            f"(input {in_hw[0]}x{in_hw[1]}, padding {pads})"
        )
    return oh, ow


def im2col(
    xp: np.ndarray,
    kernel: Pair,
    out_hw: Pair,
    stride: Pair,
    dilation: Pair,
    ones_column: bool = False,
) -> np.ndarray:
    """Rows of patches: ``(N, Hp, Wp, C) -> (N*OH*OW, KH*KW*C)``, one copy of a strided view.

    With ``ones_column``, a last column of ones is appended (``(M, KH*KW*C + 1)``):
    the input that the bias multiplies, so that the bias rides along in the GEMM
    (forward) and its gradient comes out of the weight-gradient GEMM as one more
    column, instead of two extra passes over the output.
    """
    n, c = xp.shape[0], xp.shape[3]
    k = kernel[0] * kernel[1] * c
    cols = np.empty((n * out_hw[0] * out_hw[1], k + ones_column), dtype=xp.dtype)
    patches = cols[:, :k].reshape(n, *out_hw, kernel[0], kernel[1], c)  # a view into cols
    patches[...] = windows(xp, kernel, out_hw, stride, dilation)  # (N, OH, OW, KH, KW, C)
    if ones_column:
        cols[:, k] = 1
    return cols


def col2im(
    dcols: np.ndarray,
    padded_shape: tuple[int, int, int, int],
    kernel: Pair,
    out_hw: Pair,
    stride: Pair,
    dilation: Pair,
) -> np.ndarray:
    """Adjoint of :func:`im2col`: ``(N*OH*OW, KH*KW*C) -> (N, Hp, Wp, C)``.

    One strided add per kernel offset (no ``np.add.at``): the rows' entries for
    offset ``(i, j)`` go back to the pixels that offset read.
    """
    n, _, _, c = padded_shape
    d6 = dcols.reshape(n, out_hw[0], out_hw[1], kernel[0], kernel[1], c)  # (N, OH, OW, KH, KW, C)
    dxp = np.zeros(padded_shape, dtype=dcols.dtype)  # (N, Hp, Wp, C)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            offset_view(dxp, i, j, out_hw, stride, dilation)[...] += d6[:, :, :, i, j, :]
    return dxp


def conv2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: Pair = (1, 1),
    pads: Pads = (0, 0, 0, 0),
    dilation: Pair = (1, 1),
    groups: int = 1,
) -> tuple[np.ndarray, tuple[Any, ...]]:
    """Convolution (cross-correlation, as every framework) by im2col and a GEMM.

    The batch is processed in chunks of ``handgrad._parallel.CHUNK`` images (on
    threads, if set): each chunk's im2col rows are multiplied while still in cache.
    The bias is one more column of the weight matrix, against a column of ones.

    Shape: x ``(N, C, H, W)``, w ``(C_out, C/groups, KH, KW)``, b ``(C_out,)``
    -> out ``(N, C_out, OH, OW)`` (channels-last memory), and the cache for
    :func:`conv2d_backward`.
    """
    n, _, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    kernel = (kh, kw)
    out_hw = conv_geometry((h, wd), kernel, stride, pads, dilation, "conv2d_forward")
    og = c_out // groups
    w_mat = weight_matrix(w, b)  # (C_out, KH*KW*C/g [+ 1])
    out = np.empty((n, *out_hw, c_out), dtype=x.dtype)  # (N, OH, OW, C_out)

    def chunk(lo: int, hi: int) -> list[np.ndarray]:
        xp = pad_nhwc(to_nhwc(x[lo:hi]), pads)  # (n_c, Hp, Wp, C)
        o2 = out[lo:hi].reshape(-1, c_out)  # (M_c, C_out), a view
        cols = [
            im2col(xp[..., g * cg : (g + 1) * cg], kernel, out_hw, stride, dilation, b is not None)
            for g in range(groups)
        ]  # each (M_c, KH*KW*C/g [+ 1])
        if groups == 1:
            np.matmul(cols[0], w_mat.T, out=o2)
        else:
            for g in range(groups):
                o2[:, g * og : (g + 1) * og] = cols[g] @ w_mat[g * og : (g + 1) * og].T
        return cols

    size = _parallel.CHUNK
    cols = map_chunks(chunk, n, size)
    padded_hw = (h + pads[0] + pads[1], wd + pads[2] + pads[3])
    geometry = (padded_hw, pads, out_hw, stride, dilation, groups)
    cache = (cols, size, w_mat.shape, geometry, b is not None)
    return to_nchw(out), cache


def column_sums(d2: np.ndarray) -> np.ndarray:
    """``d2.sum(axis=0)`` for a tall ``(M, K)`` array, as a GEMV with a ones vector:
    3-7x faster than NumPy's row-by-row reduction here, and rounding errors grow
    more slowly (BLAS accumulates in blocks)."""
    return np.ones(d2.shape[0], dtype=d2.dtype) @ d2


def conv2d_data_grad(
    d2: np.ndarray,
    w: np.ndarray,
    padded_shape: tuple[int, int, int, int],
    out_hw: Pair,
    stride: Pair,
    dilation: Pair,
    groups: int = 1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``col2im(d2 @ w_mat)``, one kernel offset at a time: ``(M, C_out) -> (N, Hp, Wp, C)``.

    For offset ``(i, j)``, ``d2 @ w[:, :, i, j]`` is the ``(M, C)`` slice of
    ``dcols`` that offset owns; it is added onto the pixels the offset read while
    it is still in cache. Same sums as :func:`col2im` of the whole ``dcols``
    (the tests check it), in 0.7x the time for LeNet's second convolution,
    because the full ``dcols`` would be read back from memory with a stride.
    With ``out`` (of ``padded_shape``), the result goes there.
    """
    n = padded_shape[0]
    c_out, cg, kh, kw = w.shape
    og = c_out // groups
    if out is None:
        dxp = np.zeros(padded_shape, dtype=d2.dtype)  # (N, Hp, Wp, C)
    else:
        dxp = out
        dxp[...] = 0
    # One buffer for every offset's product: a fresh (M, C) array per offset would be
    # a fresh allocation, and glibc hands big ones back to the kernel when they are
    # freed, so each would page-fault its way in again (it doubled this loop's time).
    part = np.empty((d2.shape[0], cg), dtype=d2.dtype)  # (M, C/g)
    for g in range(groups):
        dg = d2 if groups == 1 else d2[:, g * og : (g + 1) * og]  # (M, C_out/g)
        for i in range(kh):
            for j in range(kw):
                np.matmul(dg, w[g * og : (g + 1) * og, :, i, j], out=part)
                view = offset_view(dxp, i, j, out_hw, stride, dilation)  # (N, OH, OW, C)
                if groups == 1:
                    view += part.reshape(view.shape)
                else:
                    view[..., g * cg : (g + 1) * cg] += part.reshape(n, *out_hw, cg)
    return dxp


def conv2d_backward(
    dout: np.ndarray, w: np.ndarray, cache: tuple[Any, ...], need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of :func:`conv2d_forward`: ``(dx, dw, db)``; ``dx`` is None unless ``need_dx``.

    Chunk by chunk as the forward pass; the chunks' weight and bias gradients are
    added in chunk order, so the result does not depend on the thread count.

    Shape: dout ``(N, C_out, OH, OW)`` -> dx ``(N, C, H, W)``, dw like ``w``, db ``(C_out,)``.
    """
    cols, size, w_mat_shape, geometry, with_bias = cache
    padded_hw, pads, out_hw, stride, dilation, groups = geometry
    c_out, cg = w.shape[:2]
    og = c_out // groups
    n = dout.shape[0]
    c = cg * groups
    h, wd = padded_hw[0] - pads[0] - pads[1], padded_hw[1] - pads[2] - pads[3]
    dx = np.empty((n, h, wd, c), dtype=dout.dtype) if need_dx else None  # (N, H, W, C)

    def chunk(lo: int, hi: int) -> np.ndarray:
        d2 = to_nhwc(dout[lo:hi]).reshape(-1, c_out)  # (M_c, C_out)
        k_cols = cols[lo // size]
        dw_mat = np.empty(w_mat_shape, dtype=dout.dtype)  # (C_out, KH*KW*C/g [+ 1])
        for g in range(groups):
            dg = d2 if groups == 1 else d2[:, g * og : (g + 1) * og]  # (M_c, C_out/g)
            dw_mat[g * og : (g + 1) * og] = dg.T @ k_cols[g]
        if dx is not None:
            shape = (hi - lo, *padded_hw, c)
            if any(pads):
                dxp = conv2d_data_grad(d2, w, shape, out_hw, stride, dilation, groups)
                dx[lo:hi] = crop_nhwc(dxp, pads)
            else:  # no padding to crop: add straight into dx
                conv2d_data_grad(d2, w, shape, out_hw, stride, dilation, groups, out=dx[lo:hi])
        return dw_mat

    dw, db = unpack_weight_grads(map_chunks(chunk, n, size), w.shape, with_bias)
    dx_nchw = None if dx is None else to_nchw(dx)
    return dx_nchw, dw, db


def unpack_weight_grads(
    parts: list[np.ndarray], w_shape: tuple[int, ...], with_bias: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(dw, db)`` from the chunks' ``(C_out, KH*KW*C [+ 1])`` weight-gradient matrices.

    The chunks are added in chunk order (the same sum on any number of threads);
    the first ``KH*KW*C`` columns are ``dw`` in a patch's ``(KH, KW, C)`` order,
    the ones column's (if any) is ``db``.
    """
    c_out, cg, kh, kw = w_shape
    dw_mat = parts[0]
    for part in parts[1:]:
        dw_mat += part
    k = kh * kw * cg
    dw = np.ascontiguousarray(dw_mat[:, :k].reshape(c_out, kh, kw, cg).transpose(0, 3, 1, 2))
    db = dw_mat[:, k].copy() if with_bias else None  # the ones column's weight gradient
    return dw, db


def weight_matrix(w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``(C_out, C/g, KH, KW)`` weights as ``(C_out, KH*KW*C/g [+ 1])``: the row order of
    a patch, then the bias as the weight of the ones column."""
    c_out = w.shape[0]
    w_mat = w.transpose(0, 2, 3, 1).reshape(c_out, -1)
    return w_mat if b is None else np.concatenate([w_mat, b.reshape(c_out, 1)], axis=1)


# -- module ---------------------------------------------------------------------


class Conv2d(Module):
    """2-D convolution over ``(N, C, H, W)`` batches, PyTorch's arguments and weight layout.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels ``C`` of the input and ``C_out`` of the output.
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (int, int), ``"valid"`` or ``"same"``
        Zeros added on both sides; ``"same"`` keeps ``H, W`` (stride 1 only).
    groups : int
        Split the channels into ``groups`` independent convolutions (both channel
        counts must divide). ``groups=1``, the common case, runs one GEMM.
    bias : bool
        Learn a bias per output channel (default True).
    rng : numpy.random.Generator or int, optional
        Source of the initial weights.
    weight_init, bias_init : callable, optional
        Default He (Kaiming) uniform with ``fan_in = C/groups * KH * KW``; zeros.
    dtype : numpy dtype
        float32 (default) or float64.

    Shape
    -----
    ``(N, C, H, W) -> (N, C_out, OH, OW)`` with
    ``OH = (H + pad_top + pad_bottom - dilation*(KH-1) - 1) // stride + 1`` (same for ``OW``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: PaddingArg = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        rng: np.random.Generator | int | None = None,
        weight_init: Initialiser | None = None,
        bias_init: Initialiser | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        super().__init__()
        where = "Conv2d"
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
        if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f"{where}: groups must be a positive int, got {groups!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{where}: in_channels ({in_channels}) and out_channels ({out_channels}) "
                f"must both be divisible by groups ({groups})"
            )
        if padding_mode != "zeros":
            raise ValueError(
                f"{where}: only padding_mode='zeros' is supported, got {padding_mode!r}"
            )
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", where)
        self.stride = pair(stride, "stride", where)
        self.dilation = pair(dilation, "dilation", where)
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", where, 0)
        self.groups = int(groups)
        self._pads = resolve_padding(padding, self.kernel_size, self.stride, self.dilation, where)
        self.dtype = np.dtype(dtype)
        generator = as_generator(rng)
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        w_init = weight_init or initialisers.kaiming_uniform
        self.weight = Parameter(w_init(shape, generator, dtype=self.dtype))
        b_init = bias_init or initialisers.zeros
        self.bias: Parameter | None = (
            Parameter(b_init((self.out_channels,), dtype=self.dtype)) if bias else None
        )
        self._cache: tuple[Any, ...] | None = None
        self._out_shape: tuple[int, ...] | None = None
        self._in_shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_4d(x, "Conv2d.forward", self.in_channels)
        check_dtype(x, self.weight.dtype, "Conv2d.forward")
        conv_geometry(
            x.shape[2:], self.kernel_size, self.stride, self._pads, self.dilation, "Conv2d.forward"
        )
        out, self._cache = conv2d_forward(
            x,
            self.weight.data,
            None if self.bias is None else self.bias.data,
            self.stride,
            self._pads,
            self.dilation,
            self.groups,
        )
        self._in_shape, self._out_shape = x.shape, out.shape
        return out

    def _grads(self, dout: np.ndarray, need_dx: bool, where: str) -> np.ndarray | None:
        cache = self._cached(self._cache)
        check_same_shape(dout, self._out_shape or (), where)
        dx, dw, db = conv2d_backward(dout, self.weight.data, cache, need_dx)
        self.weight.grad += dw
        if self.bias is not None and db is not None:
            self.bias.grad += db
        return dx

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = self._grads(dout, True, "Conv2d.backward")
        assert dx is not None
        return dx

    def backward_params(self, dout: np.ndarray) -> None:
        self._grads(dout, False, "Conv2d.backward_params")

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + f", bias={self.bias is not None}"
