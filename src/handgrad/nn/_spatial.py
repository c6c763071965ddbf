"""Shared machinery of the 2-D layers: argument parsing, output sizes, memory layout.

Layout. Every 2-D layer takes and returns arrays of *shape* ``(N, C, H, W)``, as
PyTorch does, but the fast kernels work channels-last: they look at an input
through ``x.transpose(0, 2, 3, 1)`` (shape ``(N, H, W, C)``) and hand back their
result through the inverse transpose, a view. So a convolution's output is an
``(N, C, H, W)`` view of ``(N, H, W, C)`` memory, the elementwise layers after it
keep that memory order, and the next 2-D layer reads it without a copy. With the
channels last, a patch of a 3x3 kernel is three contiguous runs of ``3 * C``
numbers instead of nine runs of 3, and the GEMM's output is already the next
layer's input. ``benchmarks/bench_cnn.py --layouts`` measured the two layouts
(see ``docs/cnn.md``).
"""

from __future__ import annotations

import numpy as np

Pair = tuple[int, int]
# (top, bottom, left, right)
Pads = tuple[int, int, int, int]


def pair(value: object, name: str, where: str, minimum: int = 1) -> Pair:
    """An int or a pair of ints, each ``>= minimum``, as a pair."""
    items = value if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items
    ):
        raise TypeError(f"{where}: {name} must be an int or a pair of ints, got {value!r}")
    a, b = int(items[0]), int(items[1])
    if a < minimum or b < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return a, b


def output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """Output length along one axis: ``(size + pads - dilation*(kernel-1) - 1) // stride + 1``."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def check_4d(x: object, where: str, channels: int | None = None) -> np.ndarray:
    """A floating ``(N, C, H, W)`` array, with ``C == channels`` when given."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where} expects a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind != "f":  # np.issubdtype(x.dtype, np.floating), 20x faster
        raise TypeError(
            f"{where} expects a floating-point array, got dtype {x.dtype}; "
            "convert first, e.g. x.astype(np.float32) / 255"
        )
    if x.ndim != 4:
        hint = "; add the channel axis with x[:, None]" if x.ndim == 3 else ""
        raise ValueError(
            f"{where} expects a 4-D input (N, C, H, W), got {x.ndim}-D shape {x.shape}{hint}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{where} expects {channels} input channels (axis 1 of (N, C, H, W)), "
            f"got {x.shape[1]} (input shape {x.shape})"
        )
    if 0 in x.shape:
        raise ValueError(f"{where} got an empty input of shape {x.shape}")
    return x


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` -> C-contiguous ``(N, H, W, C)``; free when memory is channels-last."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def to_nchw(y: np.ndarray) -> np.ndarray:
    """``(N, H, W, C)`` -> an ``(N, C, H, W)`` view of the same memory."""
    return y.transpose(0, 3, 1, 2)


def pad_nhwc(x: np.ndarray, pads: Pads, value: float = 0.0) -> np.ndarray:
    """Pad the spatial axes of ``(N, H, W, C)``; returns ``x`` itself when no padding."""
    top, bottom, left, right = pads
    if not any(pads):
        return x
    n, h, w, c = x.shape
    out = np.full((n, h + top + bottom, w + left + right, c), value, dtype=x.dtype)
    out[:, top : top + h, left : left + w, :] = x
    return out


def crop_nhwc(xp: np.ndarray, pads: Pads) -> np.ndarray:
    """Undo :func:`pad_nhwc` (a view)."""
    top, bottom, left, right = pads
    return xp[:, top : xp.shape[1] - bottom, left : xp.shape[2] - right, :]


def offset_view(
    xp: np.ndarray, i: int, j: int, out_hw: Pair, stride: Pair, dilation: Pair
) -> np.ndarray:
    """The ``(N, OH, OW, C)`` view of ``xp`` seen by kernel offset ``(i, j)``.

    Element ``[n, oh, ow, c]`` is ``xp[n, oh*sh + i*dh, ow*sw + j*dw, c]``.
    """
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return xp[:, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]


def windows(xp: np.ndarray, kernel: Pair, out_hw: Pair, stride: Pair, dilation: Pair) -> np.ndarray:
    """Every kernel window of ``xp`` ``(N, Hp, Wp, C)`` as a view ``(N, OH, OW, KH, KW, C)``.

    No copy: strides step ``stride`` pixels between windows and ``dilation``
    pixels inside one. Element ``[n, oh, ow, i, j, c]`` is
    ``xp[n, oh*sh + i*dh, ow*sw + j*dw, c]``.
    """
    sn, sy, sx, sc = xp.strides
    shape = (xp.shape[0], *out_hw, *kernel, xp.shape[3])
    strides = (
        sn,
        sy * stride[0],
        sx * stride[1],
        sy * dilation[0],
        sx * dilation[1],
        sc,
    )
    return np.lib.stride_tricks.as_strided(xp, shape, strides, writeable=False)
