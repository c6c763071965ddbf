"""Pure activation kernels: ``f(x) -> y`` and ``f_backward(dout, ...) -> dx``.

Every function keeps the input's dtype and writes into no array it was given.
Backward functions take whatever is cheapest to differentiate from (the input
``x`` or the output ``y``), as their signatures say.
"""

from __future__ import annotations

import math

import numpy as np

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# -- erf ------------------------------------------------------------------------------
# NumPy has no erf, and math.erf one element at a time is far too slow, so erf
# is computed here: a Taylor series near 0 and a continued fraction for erfc
# further out, both evaluated to double precision.

_SQRT_PI = math.sqrt(math.pi)


def _erf_series(x: np.ndarray) -> np.ndarray:
    # erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)), converges fast for |x| < 2
    x2 = x * x
    term = x.copy()
    total = x.copy()
    for n in range(1, 60):
        term = term * (-x2 / n)
        total = total + term / (2 * n + 1)
    return total * (2.0 / _SQRT_PI)


def _erfc_cf(x: np.ndarray) -> np.ndarray:
    # erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))) for x >= 2,
    # evaluated bottom-up (Lentz-free, fixed depth is ample at this range).
    frac = np.zeros_like(x)
    for k in range(60, 0, -1):
        frac = (k / 2.0) / (x + frac)
    return np.exp(-x * x) / _SQRT_PI / (x + frac)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, accurate to about 1e-15 in float64."""
    x64 = np.asarray(x, dtype=np.float64)
    a = np.abs(x64)
    out = np.empty_like(x64)
    near = a < 2.0
    out[near] = _erf_series(a[near])
    out[~near] = 1.0 - _erfc_cf(a[~near])
    return np.copysign(out, x64).astype(np.asarray(x).dtype, copy=False)


# -- elementwise activations ------------------------------------------------------------


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``."""
    return np.maximum(x, x.dtype.type(0))


def relu_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ReLU' is 1 where the output is positive (0 at the kink, like PyTorch)."""
    return dout * (y > 0)


def leaky_relu(x: np.ndarray, slope: float) -> np.ndarray:
    return np.where(x > 0, x, x * x.dtype.type(slope))


def leaky_relu_backward(dout: np.ndarray, x: np.ndarray, slope: float) -> np.ndarray:
    return np.where(x > 0, dout, dout * dout.dtype.type(slope))


def elu(x: np.ndarray, alpha: float) -> np.ndarray:
    """``x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise (expm1 keeps small x exact)."""
    neg = np.minimum(x, x.dtype.type(0))  # exp only of non-positive values: no overflow
    return np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(neg))


def elu_backward(dout: np.ndarray, x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    # d/dx alpha*(e^x - 1) = alpha*e^x = y + alpha
    return np.where(x > 0, dout, dout * (y + y.dtype.type(alpha)))


def selu(x: np.ndarray) -> np.ndarray:
    return elu(x, SELU_ALPHA) * x.dtype.type(SELU_SCALE)


def selu_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    t = x.dtype.type
    neg = np.minimum(x, t(0))
    return dout * np.where(x > 0, t(SELU_SCALE), t(SELU_SCALE * SELU_ALPHA) * np.exp(neg))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow: exp is only taken of ``-|x|``."""
    e = np.exp(-np.abs(x))  # in (0, 1]
    one = x.dtype.type(1)
    return np.where(x >= 0, one / (one + e), e / (one + e))


def sigmoid_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dout * y * (y.dtype.type(1) - y)


def tanh_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dout * (y.dtype.type(1) - y * y)


def silu(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)``."""
    return x * sigmoid(x)


def silu_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    s = sigmoid(x)
    return dout * s * (x.dtype.type(1) + x * (x.dtype.type(1) - s))


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """``x * Phi(x)``: exact with erf, or ``approximate="tanh"``."""
    t = x.dtype.type
    if approximate == "tanh":
        inner = t(_GELU_C) * (x + t(0.044715) * x * x * x)
        return t(0.5) * x * (t(1) + np.tanh(inner))
    return t(0.5) * x * (t(1) + erf(x * t(1 / math.sqrt(2.0))))


def gelu_backward(dout: np.ndarray, x: np.ndarray, approximate: str = "none") -> np.ndarray:
    t = x.dtype.type
    if approximate == "tanh":
        inner = t(_GELU_C) * (x + t(0.044715) * x * x * x)
        th = np.tanh(inner)
        dinner = t(_GELU_C) * (t(1) + t(3 * 0.044715) * x * x)
        return dout * (t(0.5) * (t(1) + th) + t(0.5) * x * (t(1) - th * th) * dinner)
    cdf = t(0.5) * (t(1) + erf(x * t(1 / math.sqrt(2.0))))
    pdf = np.exp(t(-0.5) * x * x) * t(1 / math.sqrt(2.0 * math.pi))
    return dout * (cdf + x * pdf)


# -- softmax family ------------------------------------------------------------------------


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``: shift-invariant, never overflows."""
    z = x - x.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def softmax_backward(dout: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Jacobian-vector product ``y * (dout - sum(dout * y))`` along ``axis``."""
    return y * (dout - (dout * y).sum(axis=axis, keepdims=True))


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x - logsumexp(x)`` along ``axis``."""
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def log_softmax_backward(dout: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """``dout - softmax * sum(dout)`` along ``axis`` (``softmax = exp(y)``)."""
    return dout - np.exp(y) * dout.sum(axis=axis, keepdims=True)
