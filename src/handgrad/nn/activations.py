"""Activation modules with PyTorch's names: thin wrappers over :mod:`handgrad.nn.functional`.

None has parameters. Each ``forward`` checks for a floating-point array and keeps
what its derivative is cheapest from (the output for ReLU, Sigmoid, Tanh and the
softmax family; the sigmoid or normal CDF "gate" for SiLU and GELU); ``backward``
checks ``dout`` against the output's shape and returns ``dx`` in the input's dtype.

Shape: any -> same, for all of them (Softmax and LogSoftmax need ``dim`` to exist).
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import numpy as np

from handgrad._parallel import elementwise
from handgrad.nn import functional as F
from handgrad.nn._validation import check_float_array, check_same_shape
from handgrad.nn.module import Module


def _real(value: object, where: str) -> float:
    """A finite real constructor argument, as a float; clear errors otherwise."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{where} must be a real number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{where} must be finite, got {value!r}")
    return number


class _Activation(Module):
    """Shared plumbing. Subclasses implement ``_forward(x) -> (y, cache)`` and
    ``_backward(dout, cache) -> dx``; this class validates and keeps the cache."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: tuple[tuple[int, ...], np.dtype, Any] | None = None

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def _backward(self, dout: np.ndarray, cache: Any) -> np.ndarray:
        raise NotImplementedError

    def _check_input(self, x: np.ndarray) -> None:
        """Extra input checks (Softmax's ``dim``); nothing for elementwise functions."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array(x, f"{type(self).__name__}.forward")
        self._check_input(x)
        y, cache = self._forward(x)
        self._cache = (x.shape, x.dtype, cache)
        return np.asarray(y)  # ufuncs turn 0-d arrays into scalars

    def backward(self, dout: np.ndarray) -> np.ndarray:
        shape, dtype, cache = self._cached(self._cache)
        check_same_shape(dout, shape, f"{type(self).__name__}.backward")
        # a float64 dout must not turn a float32 network's gradients into float64
        return np.asarray(self._backward(dout, cache)).astype(dtype, copy=False)


class ReLU(_Activation):
    """Rectified linear unit ``max(0, x)``.

    Shape
    -----
    any -> same
    """

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        # big batches (a convolution's output) are split over handgrad's threads
        y = elementwise(F.relu, x)
        return y, y

    def _backward(self, dout: np.ndarray, y: np.ndarray) -> np.ndarray:
        return elementwise(F.relu_backward, dout, y)


class LeakyReLU(_Activation):
    """``x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    Parameters
    ----------
    negative_slope : float
        Slope for negative inputs (default 0.01).

    Shape
    -----
    any -> same
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = _real(negative_slope, "LeakyReLU negative_slope")

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return F.leaky_relu(x, self.negative_slope), x

    def _backward(self, dout: np.ndarray, x: np.ndarray) -> np.ndarray:
        return F.leaky_relu_backward(dout, x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class ELU(_Activation):
    """Exponential linear unit: ``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise.

    Parameters
    ----------
    alpha : float
        Saturation value for large negative inputs is ``-alpha`` (default 1.0).

    Shape
    -----
    any -> same
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = _real(alpha, "ELU alpha")

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        y = F.elu(x, self.alpha)
        return y, (x, y)

    def _backward(self, dout: np.ndarray, cache: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        x, y = cache
        return F.elu_backward(dout, x, y, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class SELU(_Activation):
    """Scaled ELU, ``scale * ELU(x, alpha)``, with PyTorch's self-normalising constants
    ``alpha = 1.6732632423543772`` and ``scale = 1.0507009873554805``.

    Shape
    -----
    any -> same
    """

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        y = F.selu(x)
        return y, (x, y)

    def _backward(self, dout: np.ndarray, cache: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        x, y = cache
        return F.selu_backward(dout, x, y)


class GELU(_Activation):
    """Gaussian error linear unit ``x * Phi(x)``, ``Phi`` the standard normal CDF.

    Parameters
    ----------
    approximate : {"none", "tanh"}
        ``"none"`` computes ``Phi(x) = (1 + erf(x / sqrt(2))) / 2`` with the
        hand-written :func:`~handgrad.nn.functional.erf`; ``"tanh"`` uses
        ``(1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2``.

    Shape
    -----
    any -> same
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in F.GELU_APPROXIMATIONS:
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        gate = F.gelu_gate(x, self.approximate)  # kept: backward needs it, erf is not free
        return x * gate, (x, gate)

    def _backward(self, dout: np.ndarray, cache: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        x, gate = cache
        return F.gelu_backward(dout, x, self.approximate, gate=gate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_Activation):
    """Sigmoid linear unit (swish) ``x * sigmoid(x)``.

    Shape
    -----
    any -> same
    """

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        s = F.sigmoid(x)
        return x * s, (x, s)

    def _backward(self, dout: np.ndarray, cache: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        x, s = cache
        return F.silu_backward(dout, x, s)


class Sigmoid(_Activation):
    """Logistic function ``1 / (1 + exp(-x))``, without overflow for any ``x``.

    Shape
    -----
    any -> same
    """

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        y = F.sigmoid(x)
        return y, y

    def _backward(self, dout: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.sigmoid_backward(dout, y)


class Tanh(_Activation):
    """Hyperbolic tangent ``tanh(x)``.

    Shape
    -----
    any -> same
    """

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        y = F.tanh(x)
        return y, y

    def _backward(self, dout: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.tanh_backward(dout, y)


class _AlongDim(_Activation):
    """Normalises along one axis, ``dim``, checked against each input's rank."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        try:
            self.dim = operator.index(dim)
        except TypeError:
            raise TypeError(f"{type(self).__name__} dim must be an integer, got {dim!r}") from None

    def _check_input(self, x: np.ndarray) -> None:
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(
                f"{type(self).__name__}(dim={self.dim}) is out of range for a {x.ndim}-d input: "
                f"expected {-x.ndim} <= dim < {x.ndim}, got shape {x.shape}"
            )

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_AlongDim):
    """``exp(x_i) / sum_j exp(x_j)`` along ``dim``, computed after subtracting the maximum.

    Backward is the Jacobian-vector product ``dx = y * (dout - sum(dout * y, dim))``,
    never the ``(C, C)`` Jacobian itself.

    Parameters
    ----------
    dim : int
        Axis to normalise (default -1, the last).

    Shape
    -----
    any with ``dim`` in range -> same
    """

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        y = F.softmax(x, self.dim)
        return y, y

    def _backward(self, dout: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.softmax_backward(dout, y, self.dim)


class LogSoftmax(_AlongDim):
    """``x_i - log sum_j exp(x_j)`` along ``dim``, by log-sum-exp (finite for any finite ``x``).

    Backward: ``dx = dout - softmax(x) * sum(dout, dim)``, with ``softmax = exp(y)``.

    Parameters
    ----------
    dim : int
        Axis to normalise (default -1, the last).

    Shape
    -----
    any with ``dim`` in range -> same
    """

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        y = F.log_softmax(x, self.dim)
        return y, y

    def _backward(self, dout: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.log_softmax_backward(dout, y, self.dim)
