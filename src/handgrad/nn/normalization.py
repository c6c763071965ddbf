"""Normalisation layers: ``BatchNorm1d``, ``BatchNorm2d`` and ``LayerNorm``.

Both normalise ``xhat = (x - mean) / sqrt(var + eps)`` (biased variance) and
apply a learned affine map ``y = weight * xhat + bias``. Their backward passes
use the compact closed form

    dx = inv_std / m * (m * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))

over the ``m`` normalised elements, with ``dxhat = dout * weight``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from handgrad._parallel import map_chunks
from handgrad.nn._spatial import check_4d, to_nchw, to_nhwc
from handgrad.nn._validation import check_float_array, check_same_shape
from handgrad.nn.conv import column_sums
from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter

# -- kernels --------------------------------------------------------------------------


def normalize_forward(
    x: np.ndarray, axes: tuple[int, ...], eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(xhat, mean, var, inv_std)`` with statistics over ``axes`` (kept as size 1)."""
    mean = x.mean(axis=axes, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=axes, keepdims=True)
    inv_std = x.dtype.type(1) / np.sqrt(var + x.dtype.type(eps))
    return centred * inv_std, mean, var, inv_std


def normalize_backward(
    dxhat: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray, axes: tuple[int, ...]
) -> np.ndarray:
    """Gradient through ``xhat = (x - mean(x)) * inv_std(x)`` given ``dxhat``."""
    mean_d = dxhat.mean(axis=axes, keepdims=True)  # sum(dxhat) / m
    mean_dx = (dxhat * xhat).mean(axis=axes, keepdims=True)  # sum(dxhat * xhat) / m
    return inv_std * (dxhat - mean_d - xhat * mean_dx)


# -- modules --------------------------------------------------------------------------------


class BatchNorm1d(Module):
    """Batch normalisation over the batch (and length) axis, per channel.

    In training it normalises with the batch statistics and updates
    ``running_mean`` / ``running_var`` (unbiased) by ``momentum`` (or a
    cumulative average when ``momentum=None``); in evaluation it uses the running
    statistics.

    Parameters
    ----------
    num_features : int
        Channels ``C``.
    eps : float
        Added to the variance.
    momentum : float or None
        Weight of the new batch in the running statistics.
    affine : bool
        Learn ``weight`` (ones) and ``bias`` (zeros).
    track_running_stats : bool
        Keep running statistics; if False, batch statistics are used in both modes.

    Shape
    -----
    ``(N, C) -> (N, C)`` or ``(N, C, L) -> (N, C, L)``
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if int(num_features) <= 0:
            raise ValueError(f"{name} needs num_features > 0, got {num_features}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name} momentum must be in [0, 1] or None, got {momentum}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.dtype = np.dtype(dtype)
        c = self.num_features
        self.weight: Parameter | None = Parameter(np.ones(c, self.dtype)) if affine else None
        self.bias: Parameter | None = Parameter(np.zeros(c, self.dtype)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, self.dtype))
            self.register_buffer("running_var", np.ones(c, self.dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        self._cache: tuple | None = None

    def _shape(self, x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Statistics axes and the shape per-channel arrays broadcast with."""
        if x.ndim not in (2, 3) or x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm1d({self.num_features}) expects input of shape (N, {self.num_features}) "
                f"or (N, {self.num_features}, L), got {x.shape}"
            )
        return ((0,), (1, -1)) if x.ndim == 2 else ((0, 2), (1, -1, 1))

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array(x, "BatchNorm1d.forward")
        axes, bshape = self._shape(x)
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            m = math.prod(x.shape[a] for a in axes)
            if m <= 1:
                raise ValueError(
                    f"{type(self).__name__}: expected more than 1 value per channel when "
                    f"training, got input of shape {x.shape}"
                )
            xhat, mean, var, inv_std = normalize_forward(x, axes, self.eps)
            if self.training and self.track_running_stats:
                self._update_running(mean.reshape(-1), var.reshape(-1) * (m / (m - 1)))
        else:
            mean = self._buffers["running_mean"].reshape(bshape)
            inv_std = 1 / np.sqrt(self._buffers["running_var"].reshape(bshape) + self.eps)
            inv_std = inv_std.astype(x.dtype, copy=False)
            xhat = (x - mean) * inv_std
        self._cache = (xhat, inv_std, axes, bshape, use_batch)
        if self.weight is None or self.bias is None:
            return xhat
        return xhat * self.weight.data.reshape(bshape) + self.bias.data.reshape(bshape)

    def _update_running(self, mean: np.ndarray, unbiased_var: np.ndarray) -> None:
        self._buffers["num_batches_tracked"] = self._buffers["num_batches_tracked"] + 1
        if self.momentum is None:  # cumulative moving average
            f = 1.0 / float(self._buffers["num_batches_tracked"])
        else:
            f = self.momentum
        for name, value in (("running_mean", mean), ("running_var", unbiased_var)):
            buf = self._buffers[name]
            self._buffers[name] = ((1 - f) * buf + f * value).astype(buf.dtype)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        xhat, inv_std, axes, bshape, use_batch = self._cached(self._cache)
        check_same_shape(dout, xhat.shape, "BatchNorm1d.backward")
        if self.weight is not None and self.bias is not None:
            self.weight.grad += (dout * xhat).sum(axis=axes)  # (C,)
            self.bias.grad += dout.sum(axis=axes)  # (C,)
            dxhat = dout * self.weight.data.reshape(bshape)  # (N, C[, L])
        else:
            dxhat = dout
        if not use_batch:  # running statistics are constants
            return dxhat * inv_std
        return normalize_backward(dxhat, xhat, inv_std, axes)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


def _row_chunks(n: int, rows_per_sample: int, fn: Any) -> list[Any]:
    """Run ``fn(r0, r1)`` over the rows of an ``(N*H*W, C)`` array, a batch chunk at a time."""
    return map_chunks(lambda lo, hi: fn(lo * rows_per_sample, hi * rows_per_sample), n)


def _sum_parts(parts: list[np.ndarray]) -> np.ndarray:
    """Add per-chunk partial sums in chunk order (the same result on any thread count)."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


def _images(a2: np.ndarray, per: int) -> np.ndarray:
    """``(n*H*W, C)`` rows -> ``(n, H*W*C)``, one row per image (a view).

    A per-channel vector broadcast over ``(M, C)`` makes NumPy loop over ``M``
    rows of only ``C`` numbers each (C = 32: four times slower than the memory
    allows); over ``(n, H*W*C)`` against the vector tiled ``H*W`` times, each
    inner loop runs over a whole image.
    """
    return a2.reshape(-1, per * a2.shape[1])


def batchnorm2d_forward(
    x2: np.ndarray, n: int, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batch statistics of ``x2`` ``(M, C)`` (``M = N*H*W`` rows, channels last).

    Two passes, as the textbook: the mean, then the variance of the centred
    values (one pass of ``E[x^2] - E[x]^2`` loses digits in float32). Column sums
    are GEMVs over batch chunks, added in chunk order. Returns ``(xhat, mean,
    var, inv_std)`` with ``xhat = (x - mean) * inv_std`` of shape ``(M, C)``.
    """
    m, c = x2.shape
    per = m // n
    mean = _sum_parts(_row_chunks(n, per, lambda r0, r1: column_sums(x2[r0:r1]))) / m
    tiled_mean = np.tile(mean.astype(x2.dtype), per)  # (H*W*C,)
    xhat = np.empty_like(x2)  # (M, C): first the centred values, then scaled in place

    def centre(r0: int, r1: int) -> np.ndarray:
        xc = np.subtract(_images(x2[r0:r1], per), tiled_mean, out=_images(xhat[r0:r1], per))
        return column_sums((xc * xc).reshape(-1, c))

    var = _sum_parts(_row_chunks(n, per, centre)) / m  # (C,), biased
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x2.dtype)
    tiled = np.tile(inv_std, per)

    def scale(r0: int, r1: int) -> None:
        rows = _images(xhat[r0:r1], per)
        np.multiply(rows, tiled, out=rows)

    _row_chunks(n, per, scale)
    return xhat, mean.astype(x2.dtype), var.astype(x2.dtype), inv_std


def batchnorm2d_backward(
    dout2: np.ndarray, xhat: np.ndarray, scale: np.ndarray, n: int, batch_stats: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dweight, dbias)`` of ``y = weight * xhat + bias`` for ``(M, C)`` arrays.

    ``scale = weight * inv_std``. With batch statistics the mean and variance
    depend on ``x`` too, which gives the closed form
    ``dx = scale * (dout - mean(dout) - xhat * mean(dout * xhat))``; with running
    statistics ``dx = scale * dout``.
    """
    m = dout2.shape[0]
    per = m // n

    def sums(r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        d = dout2[r0:r1]
        return column_sums(d), column_sums(d * xhat[r0:r1])

    parts = _row_chunks(n, per, sums)
    dbias = _sum_parts([p[0] for p in parts])  # (C,) sum of dout
    dweight = _sum_parts([p[1] for p in parts])  # (C,) sum of dout * xhat
    dx = np.empty_like(dout2)  # (M, C)
    tiled_scale = np.tile(scale.astype(dout2.dtype), per)  # (H*W*C,)
    if not batch_stats:

        def plain(r0: int, r1: int) -> None:
            np.multiply(_images(dout2[r0:r1], per), tiled_scale, out=_images(dx[r0:r1], per))

        _row_chunks(n, per, plain)
        return dx, dweight, dbias
    shift = np.tile((scale * dbias / m).astype(dout2.dtype), per)  # scale * mean(dout)
    slope = np.tile((scale * dweight / m).astype(dout2.dtype), per)  # scale * mean(dout * xhat)

    def grad(r0: int, r1: int) -> None:
        out = np.multiply(_images(dout2[r0:r1], per), tiled_scale, out=_images(dx[r0:r1], per))
        out -= _images(xhat[r0:r1], per) * slope
        out -= shift

    _row_chunks(n, per, grad)
    return dx, dweight, dbias


class BatchNorm2d(BatchNorm1d):
    """Batch normalisation of images: per channel, over the batch and both spatial axes.

    The same statistics, running averages, parameters and options as
    :class:`BatchNorm1d`; the ``(N, C, H, W)`` batch is seen as ``N*H*W`` samples
    of ``C`` features (channels-last, so no copy after a convolution), and the
    kernels work a batch chunk at a time on handgrad's threads.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, H, W)``
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_4d(x, "BatchNorm2d.forward", self.num_features)
        n, c, h, w = x.shape
        per = h * w
        x2 = to_nhwc(x).reshape(n * per, c)  # (M, C)
        batch_stats = self.training or not self.track_running_stats
        if batch_stats:
            if n * per <= 1:
                raise ValueError(
                    "BatchNorm2d: expected more than 1 value per channel when training, "
                    f"got input of shape {x.shape}"
                )
            xhat, mean, var, inv_std = batchnorm2d_forward(x2, n, self.eps)
            if self.training and self.track_running_stats:
                m = n * per
                self._update_running(mean, var * (m / (m - 1)))
        else:
            running_mean = self._buffers["running_mean"].astype(x.dtype)
            inv_std = (1 / np.sqrt(self._buffers["running_var"] + self.eps)).astype(x.dtype)
            tiled_mean, tiled_inv = np.tile(running_mean, per), np.tile(inv_std, per)
            xhat = np.empty_like(x2)

            def normalise(r0: int, r1: int) -> None:
                rows = np.subtract(
                    _images(x2[r0:r1], per), tiled_mean, out=_images(xhat[r0:r1], per)
                )
                np.multiply(rows, tiled_inv, out=rows)

            _row_chunks(n, per, normalise)
        self._cache = (xhat, inv_std, x.shape, batch_stats)
        if self.weight is None or self.bias is None:
            return to_nchw(xhat.reshape(n, h, w, c))
        tiled_w = np.tile(self.weight.data, per)
        tiled_b = np.tile(self.bias.data, per)
        y = np.empty_like(xhat)

        def affine(r0: int, r1: int) -> None:
            rows = np.multiply(_images(xhat[r0:r1], per), tiled_w, out=_images(y[r0:r1], per))
            rows += tiled_b

        _row_chunks(n, per, affine)
        return to_nchw(y.reshape(n, h, w, c))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        xhat, inv_std, shape, batch_stats = self._cached(self._cache)
        check_same_shape(dout, shape, "BatchNorm2d.backward")
        n, c, h, w = shape
        d2 = to_nhwc(dout).reshape(n * h * w, c)  # (M, C)
        scale = inv_std if self.weight is None else self.weight.data * inv_std
        dx, dweight, dbias = batchnorm2d_backward(d2, xhat, scale, n, batch_stats)
        if self.weight is not None and self.bias is not None:
            self.weight.grad += dweight
            self.bias.grad += dbias
        return to_nchw(dx.reshape(n, h, w, c))


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` axes of each sample.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The trailing shape to normalise over.
    eps : float
        Added to the variance.
    elementwise_affine : bool
        Learn ``weight`` (ones) and, if ``bias``, ``bias`` (zeros) of ``normalized_shape``.

    Shape
    -----
    ``(*, *normalized_shape) -> same``
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        super().__init__()
        shape = (
            (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        )
        if not shape or min(shape) <= 0:
            raise ValueError(f"LayerNorm needs a positive normalized_shape, got {normalized_shape}")
        self.normalized_shape = tuple(int(s) for s in shape)
        self.eps = float(eps)
        self.elementwise_affine = elementwise_affine
        self.dtype = np.dtype(dtype)
        self.weight: Parameter | None = (
            Parameter(np.ones(self.normalized_shape, self.dtype)) if elementwise_affine else None
        )
        self.bias: Parameter | None = (
            Parameter(np.zeros(self.normalized_shape, self.dtype))
            if elementwise_affine and bias
            else None
        )
        self._cache: tuple | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array(x, "LayerNorm.forward")
        k = len(self.normalized_shape)
        if x.shape[x.ndim - k :] != self.normalized_shape or x.ndim < k:
            raise ValueError(
                f"LayerNorm expects input ending in {self.normalized_shape}, got shape {x.shape}"
            )
        axes = tuple(range(x.ndim - k, x.ndim))
        xhat, _, _, inv_std = normalize_forward(x, axes, self.eps)
        self._cache = (xhat, inv_std, axes)
        out = xhat
        if self.weight is not None:
            out = out * self.weight.data
        if self.bias is not None:
            out = out + self.bias.data
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        xhat, inv_std, axes = self._cached(self._cache)
        check_same_shape(dout, xhat.shape, "LayerNorm.backward")
        lead = tuple(range(xhat.ndim - len(axes)))  # batch axes to sum parameter grads over
        dxhat = dout
        if self.weight is not None:
            self.weight.grad += (dout * xhat).sum(axis=lead)
            dxhat = dout * self.weight.data
        if self.bias is not None:
            self.bias.grad += dout.sum(axis=lead)
        return normalize_backward(dxhat, xhat, inv_std, axes)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )
