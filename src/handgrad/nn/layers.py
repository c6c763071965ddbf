"""Basic layers: ``Linear``, ``Dropout``, ``Dropout2d``, ``Flatten``, ``Unflatten``, ``Identity``.

Each layer pairs a pure ``*_forward`` / ``*_backward`` kernel with a thin module
that keeps the forward cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from handgrad._random import as_generator
from handgrad.nn import init as initialisers
from handgrad.nn._spatial import check_4d
from handgrad.nn._validation import check_features, check_float_array, check_same_shape
from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter

Initialiser = Callable[..., np.ndarray]


# -- kernels ------------------------------------------------------------------


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``out = x @ w.T + b``.

    Shape: x ``(N, *, D_in)``, w ``(D_out, D_in)``, b ``(D_out,)`` -> ``(N, *, D_out)``.
    """
    out = x @ w.T
    if b is not None:
        out += b  # out is a fresh array, so this writes into nothing we were given
    return out


def linear_param_grads(
    dout: np.ndarray, x: np.ndarray, with_bias: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Parameter gradients of ``out = x @ w.T + b``: returns ``(dw, db)``."""
    dout2 = dout.reshape(-1, dout.shape[-1])  # (M, D_out), M = N * prod(*)
    x2 = x.reshape(-1, x.shape[-1])  # (M, D_in)
    dw = dout2.T @ x2  # (D_out, D_in)
    db = dout2.sum(axis=0) if with_bias else None  # (D_out,)
    return dw, db


def linear_backward(
    dout: np.ndarray, x: np.ndarray, w: np.ndarray, with_bias: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of ``out = x @ w.T + b``: returns ``(dx, dw, db)``."""
    dx = dout @ w  # (N, *, D_in)
    dw, db = linear_param_grads(dout, x, with_bias)
    return dx, dw, db


def dropout_mask(
    shape: tuple[int, ...], p: float, rng: np.random.Generator, dtype: np.dtype
) -> np.ndarray:
    """Inverted-dropout mask: 0 with probability ``p``, else ``1 / (1 - p)``."""
    keep = rng.random(shape) >= p
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))


# -- modules --------------------------------------------------------------------


class Linear(Module):
    """Fully connected layer ``y = x W^T + b``.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of each input and output sample.
    bias : bool
        Learn an additive bias (default True).
    rng : numpy.random.Generator or int, optional
        Source of the initial weights. Pass one (or a seed) for reproducible runs.
    weight_init : callable, optional
        ``f(shape, rng, dtype=...) -> ndarray``; default He (Kaiming) uniform for
        ReLU networks, ``U(-b, b)`` with ``b = sqrt(6 / in_features)``.
    bias_init : callable, optional
        ``f(shape, dtype=...) -> ndarray``; default zeros.
    dtype : numpy dtype
        float32 (default) or float64.

    Shape
    -----
    ``(N, *, in_features) -> (N, *, out_features)``
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rng: np.random.Generator | int | None = None,
        weight_init: Initialiser | None = None,
        bias_init: Initialiser | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        super().__init__()
        if int(in_features) <= 0 or int(out_features) <= 0:
            raise ValueError(
                f"Linear needs positive sizes, got in_features={in_features}, "
                f"out_features={out_features}"
            )
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.dtype = np.dtype(dtype)
        generator = as_generator(rng)
        shape = (self.out_features, self.in_features)
        w_init = weight_init or initialisers.kaiming_uniform
        self.weight = Parameter(w_init(shape, generator, dtype=self.dtype))
        b_init = bias_init or initialisers.zeros
        self.bias: Parameter | None = (
            Parameter(b_init((self.out_features,), dtype=self.dtype)) if bias else None
        )
        self._cache: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_features(x, "Linear.forward", self.in_features, self.weight.dtype)
        self._cache = x
        return linear_forward(x, self.weight.data, None if self.bias is None else self.bias.data)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        x = self._cached(self._cache)
        check_same_shape(dout, (*x.shape[:-1], self.out_features), "Linear.backward")
        dx, dw, db = linear_backward(dout, x, self.weight.data, self.bias is not None)
        self._accumulate(dw, db)
        return dx

    def backward_params(self, dout: np.ndarray) -> None:
        x = self._cached(self._cache)
        check_same_shape(dout, (*x.shape[:-1], self.out_features), "Linear.backward_params")
        self._accumulate(*linear_param_grads(dout, x, self.bias is not None))

    def _accumulate(self, dw: np.ndarray, db: np.ndarray | None) -> None:
        self.weight.grad += dw
        if self.bias is not None and db is not None:
            self.bias.grad += db

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Dropout(Module):
    """Inverted dropout: zero each element with probability ``p`` and scale the rest
    by ``1 / (1 - p)`` in training; the identity in evaluation mode.

    Parameters
    ----------
    p : float
        Drop probability, ``0 <= p < 1``.
    rng : numpy.random.Generator or int, optional
        Source of the masks.

    Shape
    -----
    any -> same
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        if not (isinstance(p, (int, float)) and 0.0 <= p < 1.0) or math.isnan(p):
            raise ValueError(f"Dropout probability must be in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = as_generator(rng)
        self._mask: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array(x, "Dropout.forward")
        self._shape = x.shape
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        self._mask = dropout_mask(x.shape, self.p, self.rng, x.dtype)
        return x * self._mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        shape = self._cached(self._shape)
        check_same_shape(dout, shape, f"{type(self).__name__}.backward")
        if self._mask is None:
            return dout
        return dout * self._mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout2d(Dropout):
    """Channel dropout: zero whole feature maps with probability ``p`` and scale the
    rest by ``1 / (1 - p)`` in training; the identity in evaluation mode.

    Neighbouring pixels of a feature map are strongly correlated, so dropping
    single pixels (``Dropout``) hardly regularises a convolutional layer;
    dropping a whole channel does.

    Shape
    -----
    ``(N, C, H, W) -> same`` (one mask entry per sample and channel)
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_4d(x, "Dropout2d.forward")
        self._shape = x.shape
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        self._mask = dropout_mask((*x.shape[:2], 1, 1), self.p, self.rng, x.dtype)  # (N, C, 1, 1)
        return x * self._mask


class Flatten(Module):
    """Flatten all axes after the batch axis (``start_dim=1``).

    Shape
    -----
    ``(N, d1, d2, ...) -> (N, d1 * d2 * ...)``
    """

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array(x, "Flatten.forward")
        if x.ndim < 1:
            raise ValueError("Flatten.forward needs at least a batch axis, got a 0-d array")
        self._shape = x.shape
        # a convolution's output is channels-last in memory: remember it, so that the
        # gradient goes back in the same layout (mixing layouts slows every later ufunc)
        self._channels_last = x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        shape = self._cached(self._shape)
        check_same_shape(dout, (shape[0], math.prod(shape[1:])), "Flatten.backward")
        dx = dout.reshape(shape)
        if self.__dict__.get("_channels_last") and not dx.transpose(0, 2, 3, 1).flags.c_contiguous:
            dx = np.ascontiguousarray(dx.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        return dx


class Unflatten(Module):
    """Split axis ``dim`` into ``unflattened_size`` (PyTorch's ``nn.Unflatten``).

    ``Sequential(Flatten(), Unflatten(1, (1, 28, 28)), Conv2d(1, ...))`` takes MNIST
    as ``(N, 28, 28)`` or ``(N, 784)`` and gives the convolution its ``(N, 1, 28, 28)``.

    Shape
    -----
    ``(N, ..., prod(unflattened_size), ...) -> (N, ..., *unflattened_size, ...)``
    """

    def __init__(self, dim: int, unflattened_size: tuple[int, ...]) -> None:
        super().__init__()
        sizes = tuple(unflattened_size)
        if not sizes or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in sizes):
            raise ValueError(f"Unflatten needs a tuple of positive sizes, got {unflattened_size!r}")
        self.dim = int(dim)
        self.unflattened_size = tuple(int(s) for s in sizes)
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array(x, "Unflatten.forward")
        dim = self.dim if self.dim >= 0 else x.ndim + self.dim
        if not 0 <= dim < x.ndim or x.shape[dim] != math.prod(self.unflattened_size):
            raise ValueError(
                f"Unflatten({self.dim}, {self.unflattened_size}) needs axis {self.dim} of size "
                f"{math.prod(self.unflattened_size)}, got input of shape {x.shape}"
            )
        self._shape = x.shape
        out = x.reshape(*x.shape[:dim], *self.unflattened_size, *x.shape[dim + 1 :])
        self._out_shape = out.shape
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        shape = self._cached(self._shape)
        check_same_shape(dout, self._out_shape, "Unflatten.backward")
        return dout.reshape(shape)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Identity(Module):
    """Returns its input unchanged (a placeholder in a ``Sequential``).

    Shape
    -----
    any -> same
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array(x, "Identity.forward")
        self._shape = x.shape
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        shape = self._cached(self._shape)
        return check_same_shape(dout, shape, "Identity.backward")
