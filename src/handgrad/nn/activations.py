"""Activation modules: thin stateful wrappers over the kernels in ``functional``.

Each caches what its derivative needs (the input or the output) and checks
``dout`` against the shape of its output.

Shape: any -> same, for all of them.
"""

from __future__ import annotations

import numpy as np

from handgrad.nn import functional as F
from handgrad.nn._validation import check_float_array, check_same_shape
from handgrad.nn.module import Module


class _Elementwise(Module):
    """Shared plumbing: validate, cache ``(x, y)``, check ``dout``."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def _f(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _df(self, dout: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array(x, f"{type(self).__name__}.forward")
        y = self._f(x)
        self._cache = (x, y)
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        x, y = self._cached(self._cache)
        check_same_shape(dout, y.shape, f"{type(self).__name__}.backward")
        return self._df(dout, x, y)


class ReLU(_Elementwise):
    """``max(0, x)``."""

    def _f(self, x: np.ndarray) -> np.ndarray:
        return F.relu(x)

    def _df(self, dout: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.relu_backward(dout, y)


class LeakyReLU(_Elementwise):
    """``x`` for x > 0, ``negative_slope * x`` otherwise."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def _f(self, x: np.ndarray) -> np.ndarray:
        return F.leaky_relu(x, self.negative_slope)

    def _df(self, dout: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.leaky_relu_backward(dout, x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class ELU(_Elementwise):
    """``x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def _f(self, x: np.ndarray) -> np.ndarray:
        return F.elu(x, self.alpha)

    def _df(self, dout: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.elu_backward(dout, x, y, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class SELU(_Elementwise):
    """``scale * ELU(x, alpha)`` with the self-normalising constants of Klambauer et al."""

    def _f(self, x: np.ndarray) -> np.ndarray:
        return F.selu(x)

    def _df(self, dout: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.selu_backward(dout, x)


class GELU(_Elementwise):
    """``x * Phi(x)`` (exact, with erf) or its tanh approximation (``approximate="tanh"``)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _f(self, x: np.ndarray) -> np.ndarray:
        return F.gelu(x, self.approximate)

    def _df(self, dout: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.gelu_backward(dout, x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_Elementwise):
    """``x * sigmoid(x)`` (also called swish)."""

    def _f(self, x: np.ndarray) -> np.ndarray:
        return F.silu(x)

    def _df(self, dout: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.silu_backward(dout, x)


class Sigmoid(_Elementwise):
    """``1 / (1 + exp(-x))``, computed without overflow for any ``x``."""

    def _f(self, x: np.ndarray) -> np.ndarray:
        return F.sigmoid(x)

    def _df(self, dout: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.sigmoid_backward(dout, y)


class Tanh(_Elementwise):
    """``tanh(x)``."""

    def _f(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x)

    def _df(self, dout: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.tanh_backward(dout, y)


class _AlongDim(_Elementwise):
    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = int(dim)

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array(x, f"{type(self).__name__}.forward")
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(
                f"{type(self).__name__}(dim={self.dim}) needs an input with more than "
                f"{self.dim if self.dim >= 0 else -self.dim - 1} dimensions, got shape {x.shape}"
            )
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_AlongDim):
    """``exp(x_i) / sum_j exp(x_j)`` along ``dim``; backward is the Jacobian-vector product."""

    def _f(self, x: np.ndarray) -> np.ndarray:
        return F.softmax(x, self.dim)

    def _df(self, dout: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.softmax_backward(dout, y, self.dim)


class LogSoftmax(_AlongDim):
    """``x_i - log sum_j exp(x_j)`` along ``dim``."""

    def _f(self, x: np.ndarray) -> np.ndarray:
        return F.log_softmax(x, self.dim)

    def _df(self, dout: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return F.log_softmax_backward(dout, y, self.dim)
