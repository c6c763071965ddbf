"""Weight initialisers. Every random one takes an explicit ``numpy.random.Generator``.

Fan-in and fan-out follow PyTorch's convention for a weight of shape
``(out_features, in_features, *kernel)``: ``fan_in = in_features * prod(kernel)``,
``fan_out = out_features * prod(kernel)``. Each function returns a new array.
"""

from __future__ import annotations

import math

import numpy as np

from handgrad._random import check_generator

_GAINS = {
    "linear": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "relu": math.sqrt(2.0),
    "selu": 3.0 / 4.0,
}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """Recommended gain for a nonlinearity (PyTorch's values).

    ``leaky_relu`` takes its negative slope as ``param`` (default 0.01).
    """
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope**2))
    if nonlinearity not in _GAINS:
        raise ValueError(
            f"unknown nonlinearity {nonlinearity!r}; choose from {sorted([*_GAINS, 'leaky_relu'])}"
        )
    return _GAINS[nonlinearity]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape`` (at least 2-D)."""
    if len(shape) < 2:
        raise ValueError(f"fan in/out need a weight with at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fan(shape: tuple[int, ...], mode: str) -> int:
    fan_in, fan_out = fans(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")


def uniform(
    shape: tuple[int, ...],
    low: float,
    high: float,
    rng: np.random.Generator,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Samples from U(low, high)."""
    return check_generator(rng, "handgrad.nn.init").uniform(low, high, size=shape).astype(dtype)


def normal(
    shape: tuple[int, ...],
    std: float,
    rng: np.random.Generator,
    dtype: np.dtype | type = np.float32,
    mean: float = 0.0,
) -> np.ndarray:
    """Samples from N(mean, std^2)."""
    return (
        mean + std * check_generator(rng, "handgrad.nn.init").standard_normal(size=shape)
    ).astype(dtype)


def kaiming_normal(
    shape: tuple[int, ...],
    rng: np.random.Generator,
    *,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """He initialisation: N(0, gain^2 / fan), gain for ReLU is sqrt(2)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode))
    return normal(shape, std, rng, dtype)


def kaiming_uniform(
    shape: tuple[int, ...],
    rng: np.random.Generator,
    *,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """He initialisation: U(-b, b) with b = gain * sqrt(3 / fan)."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(shape, mode))
    return uniform(shape, -bound, bound, rng, dtype)


def xavier_normal(
    shape: tuple[int, ...],
    rng: np.random.Generator,
    *,
    gain: float = 1.0,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Glorot initialisation: N(0, gain^2 * 2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return normal(shape, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng, dtype)


def xavier_uniform(
    shape: tuple[int, ...],
    rng: np.random.Generator,
    *,
    gain: float = 1.0,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Glorot initialisation: U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, -bound, bound, rng, dtype)


def lecun_normal(
    shape: tuple[int, ...], rng: np.random.Generator, *, dtype: np.dtype | type = np.float32
) -> np.ndarray:
    """LeCun initialisation: N(0, 1 / fan_in) (the one SELU networks need)."""
    return normal(shape, 1.0 / math.sqrt(fans(shape)[0]), rng, dtype)


def lecun_uniform(
    shape: tuple[int, ...], rng: np.random.Generator, *, dtype: np.dtype | type = np.float32
) -> np.ndarray:
    """LeCun initialisation: U(-b, b) with b = sqrt(3 / fan_in)."""
    bound = math.sqrt(3.0 / fans(shape)[0])
    return uniform(shape, -bound, bound, rng, dtype)


def zeros(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def ones(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    return np.ones(shape, dtype=dtype)
