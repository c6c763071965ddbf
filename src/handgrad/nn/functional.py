"""Pure activation kernels: ``f(x) -> y`` and ``f_backward(dout, ...) -> dx``.

Every function computes in the input's dtype (float32 stays float32), writes into
no array it was given, and differentiates from whatever is cheapest, as its
signature says: the input ``x``, the output ``y``, or a ``gate`` saved by forward.

Shape: any -> same, for all of them (the softmax family normalises along ``axis``).
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal, localcontext

import numpy as np

# PyTorch's constants (Klambauer et al. 2017), to the digits PyTorch writes them.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# -- erf -------------------------------------------------------------------------------
# NumPy has no erf, and math.erf one element at a time is far too slow. erf is an
# entire function, so each x is evaluated by a short Taylor polynomial around the
# nearest centre c in 0, 1/4, ..., 6 (|h| = ||x| - c| <= 1/8):
#
#     erf(c + h) = erf(c) + sum_{k>=1} b_k h^k,    b_k = g_{k-1} / k,
#
# where g_k are the Taylor coefficients at c of erf'(x) = 2/sqrt(pi) exp(-x^2).
# From g' = -2 x g:   g_0 = 2/sqrt(pi) exp(-c^2),   g_1 = -2 c g_0,
#                     (k + 1) g_{k+1} = -2 c g_k - 2 g_{k-1}.
# erf(c) is the Maclaurin series 2/sqrt(pi) sum_n (-1)^n c^(2n+1) / (n! (2n+1)),
# summed in 50-digit decimals (its terms reach 1e13 at c = 6 before cancelling),
# so every table entry is correctly rounded. The tail after h^13 is below 1e-17,
# after h^7 below 1e-9: float64 and float32 each get the degree they need.
# erf(x) rounds to 1 in float64 from x = 5.93 on, so x is clamped at 6.

_ERF_STEP = 0.25  # a power of two: centres and h = |x| - c are exact
_ERF_LAST = 6.0
_ERF_DEGREE = {np.dtype(np.float64): 13, np.dtype(np.float32): 7}
_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")


@functools.cache
def _erf_table(dtype: np.dtype) -> np.ndarray:
    """Row ``k`` holds ``b_k`` for every centre (row 0: ``erf(c)``). Shape ``(degree + 1, 25)``."""
    degree = _ERF_DEGREE[dtype]
    columns = []
    with localcontext() as ctx:
        ctx.prec = 50
        two_over_sqrt_pi = 2 / _PI.sqrt()
        tiny = Decimal(10) ** -45
        for j in range(round(_ERF_LAST / _ERF_STEP) + 1):
            c = Decimal(j) * Decimal(_ERF_STEP)
            c2 = c * c
            term, total, n = c, c, 0
            while abs(term) > tiny:
                n += 1
                term = -term * c2 / n  # (-1)^n c^(2n+1) / n!
                total += term / (2 * n + 1)
            g = [two_over_sqrt_pi * (-c2).exp()]
            g.append(-2 * c * g[0])
            for k in range(1, degree - 1):
                g.append((-2 * c * g[k] - 2 * g[k - 1]) / (k + 1))
            b = [two_over_sqrt_pi * total] + [g[k - 1] / k for k in range(1, degree + 1)]
            columns.append([float(v) for v in b])
    return np.array(columns, dtype=dtype).T.copy()


def erf(x: np.ndarray) -> np.ndarray:
    """The error function ``erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt``, elementwise.

    About one unit in the last place: float64 within 1.2e-16 absolute and 4e-16
    relative of the true value; float32 is computed in float32 (about 1.5e-7
    relative). Other inputs (integers, float16) are computed in float64; a
    floating input's dtype is kept. ``erf(+-inf) = +-1``, ``erf(nan) = nan``.
    Costs one table gather and two array operations per polynomial degree.

    Shape: any -> same (a 0-d input gives a 0-d array).
    """
    arr = np.asarray(x)
    dtype = arr.dtype if arr.dtype in _ERF_DEGREE else np.dtype(np.float64)
    t = dtype.type
    flat = arr.reshape(-1).astype(dtype, copy=False)  # (M,)
    a = np.abs(flat)  # fresh array: safe to overwrite below
    # index of the nearest centre; fmin sends NaN to the last one (no invalid cast),
    # while minimum keeps NaN in h so that erf(nan) = nan
    idx = (np.fmin(a, t(_ERF_LAST)) * t(1 / _ERF_STEP) + t(0.5)).astype(np.intp)
    h = np.minimum(a, t(_ERF_LAST), out=a)
    h -= idx.astype(dtype) * t(_ERF_STEP)
    table = _erf_table(dtype)
    # take() is about twice as fast as fancy indexing here; every index is valid,
    # so mode="clip" only skips the bounds-error path
    out = table[-1].take(idx, mode="clip")
    for coefficients in table[-2::-1]:  # Horner, highest degree first
        out *= h
        out += coefficients.take(idx, mode="clip")
    np.copysign(out, flat, out=out)  # erf is odd
    result_dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else dtype
    return out.reshape(arr.shape).astype(result_dtype, copy=False)


# -- piecewise linear -------------------------------------------------------------------


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``max(x, 0)`` (into ``out`` if given)."""
    return np.maximum(x, x.dtype.type(0), out=out)


def relu_backward(dout: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``dout`` where the output is positive, else 0 (0 at the kink, as PyTorch)."""
    return np.multiply(dout, y > 0, out=out)


def leaky_relu(x: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    """``x`` for ``x > 0``, ``negative_slope * x`` otherwise."""
    return np.where(x > 0, x, x * x.dtype.type(negative_slope))


def leaky_relu_backward(
    dout: np.ndarray, x: np.ndarray, negative_slope: float = 0.01
) -> np.ndarray:
    """``dout`` for ``x > 0``, ``negative_slope * dout`` otherwise."""
    return np.where(x > 0, dout, dout * dout.dtype.type(negative_slope))


# -- exponential ------------------------------------------------------------------------


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise.

    ``expm1`` keeps small negative ``x`` exact, and it only ever sees ``min(x, 0)``,
    so large positive inputs cannot overflow.
    """
    t = x.dtype.type
    return np.where(x > 0, x, t(alpha) * np.expm1(np.minimum(x, t(0))))


def elu_backward(dout: np.ndarray, x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """``dout`` for ``x > 0``, else ``dout * alpha * exp(x) = dout * (y + alpha)``."""
    return np.where(x > 0, dout, dout * (y + y.dtype.type(alpha)))


def selu(x: np.ndarray) -> np.ndarray:
    """``scale * elu(x, alpha)`` with :data:`SELU_SCALE` and :data:`SELU_ALPHA`."""
    return elu(x, SELU_ALPHA) * x.dtype.type(SELU_SCALE)


def selu_backward(dout: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``scale * dout`` for ``x > 0``, else ``dout * scale * alpha * exp(x)``.

    The second branch is taken from the output: ``scale * alpha * exp(x) = y + scale * alpha``.
    """
    t = y.dtype.type
    return np.where(x > 0, dout * t(SELU_SCALE), dout * (y + t(SELU_SCALE * SELU_ALPHA)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))``, stable for any ``x``.

    Both branches use ``e = exp(-|x|)`` in ``(0, 1]``, so nothing overflows:
    ``sigmoid(|x|) = 1 / (1 + e)`` and ``sigmoid(-|x|) = e / (1 + e)``, which keeps
    full relative precision for very negative ``x`` (where ``1 - sigmoid(|x|)`` would not).
    """
    one = x.dtype.type(1)
    e = np.exp(-np.abs(x))
    d = one / (one + e)
    return np.where(x >= 0, d, e * d)


def sigmoid_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``dout * y * (1 - y)``, from the output ``y``."""
    return dout * y * (y.dtype.type(1) - y)


def tanh(x: np.ndarray) -> np.ndarray:
    """``tanh(x)``."""
    return np.tanh(x)


def tanh_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``dout * (1 - y^2)``, from the output ``y``."""
    return dout * (y.dtype.type(1) - y * y)


def silu(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)`` (swish)."""
    return x * sigmoid(x)


def silu_backward(dout: np.ndarray, x: np.ndarray, s: np.ndarray | None = None) -> np.ndarray:
    """``dout * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)`` (pass it if forward kept it)."""
    s = sigmoid(x) if s is None else s
    one = x.dtype.type(1)
    return dout * s * (one + x * (one - s))


# -- GELU -------------------------------------------------------------------------------

GELU_APPROXIMATIONS = ("none", "tanh")
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_KAPPA = 0.044715


def _check_approximate(approximate: str) -> None:
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu_gate(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """The factor ``g`` in ``gelu(x) = x * g(x)``.

    ``"none"``: the normal CDF ``Phi(x) = (1 + erf(x / sqrt(2))) / 2``.
    ``"tanh"``: ``(1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) / 2``.
    """
    _check_approximate(approximate)
    t = x.dtype.type
    if approximate == "tanh":
        inner = t(_SQRT_2_OVER_PI) * (x + t(_GELU_KAPPA) * x * x * x)
        return t(0.5) * (t(1) + np.tanh(inner))
    return t(0.5) * (t(1) + erf(x * t(math.sqrt(0.5))))


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """``x * Phi(x)``, exactly (with :func:`erf`) or with the tanh approximation."""
    return x * gelu_gate(x, approximate)


def gelu_backward(
    dout: np.ndarray, x: np.ndarray, approximate: str = "none", gate: np.ndarray | None = None
) -> np.ndarray:
    """``dout * (g + x * g')`` for ``gelu(x) = x * g(x)``; pass ``gate = g(x)`` if kept.

    ``"none"``: ``g' = phi(x) = exp(-x^2 / 2) / sqrt(2 pi)``.
    ``"tanh"``: ``g' = (1 - tanh^2) / 2 * inner' = 2 g (1 - g) * inner'`` with
    ``inner' = sqrt(2/pi) * (1 + 3 * 0.044715 x^2)``.
    """
    _check_approximate(approximate)
    t = x.dtype.type
    g = gelu_gate(x, approximate) if gate is None else gate  # same shape as x
    if approximate == "tanh":
        dinner = t(_SQRT_2_OVER_PI) * (t(1) + t(3 * _GELU_KAPPA) * x * x)  # same shape as x
        dgate = t(2) * g * (t(1) - g) * dinner
    else:
        dgate = np.exp(t(-0.5) * x * x) * t(1 / math.sqrt(2 * math.pi))
    return dout * (g + x * dgate)


# -- softmax family ---------------------------------------------------------------------


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(x_i - m) / sum_j exp(x_j - m)`` along ``axis``, ``m`` the maximum.

    Subtracting the maximum changes nothing mathematically (softmax is shift
    invariant) but keeps every ``exp`` in ``(0, 1]``: no overflow, and the sum is at least 1.
    """
    if x.size == 0:
        return np.empty_like(x)
    z = x - x.max(axis=axis, keepdims=True)  # fresh array: safe to work in place
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def softmax_backward(dout: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Jacobian-vector product ``y * (dout - sum(dout * y))`` along ``axis``, from the output."""
    dsum = (dout * y).sum(axis=axis, keepdims=True)  # (..., 1, ...) along axis
    return y * (dout - dsum)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x_i - logsumexp(x)`` along ``axis``; log-sum-exp taken after subtracting the max."""
    if x.size == 0:
        return np.empty_like(x)
    z = x - x.max(axis=axis, keepdims=True)  # fresh array, maximum 0
    z -= np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return z


def log_softmax_backward(dout: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """``dout - softmax * sum(dout)`` along ``axis``, with ``softmax = exp(y)``."""
    dsum = dout.sum(axis=axis, keepdims=True)  # (..., 1, ...) along axis
    return dout - np.exp(y) * dsum
