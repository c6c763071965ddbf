"""Input checks shared by layers and losses: clear errors instead of broadcasting noise."""

from __future__ import annotations

import numpy as np


def check_float_array(x: object, where: str) -> np.ndarray:
    """Return ``x`` if it is a floating-point ``ndarray``, else raise ``TypeError``."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where} expects a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind != "f":  # np.issubdtype(x.dtype, np.floating), 20x faster
        raise TypeError(
            f"{where} expects a floating-point array, got dtype {x.dtype}; "
            "convert first, e.g. x.astype(np.float32) / 255"
        )
    return x


def check_features(
    x: object, where: str, features: int, dtype: np.dtype | None = None
) -> np.ndarray:
    """Check a ``(N, features)`` input (rank >= 2 accepted: ``(N, *, features)``)."""
    arr = check_float_array(x, where)
    if arr.ndim < 2:
        raise ValueError(
            f"{where} expects input of shape (N, {features}), got rank {arr.ndim} "
            f"shape {arr.shape}; add a batch axis with x[None] or x.reshape(1, -1)"
        )
    if arr.shape[-1] != features:
        raise ValueError(
            f"{where} expects {features} input features (last axis), got {arr.shape[-1]} "
            f"(input shape {arr.shape})"
        )
    if dtype is not None:
        check_dtype(arr, dtype, where)
    return arr


def check_dtype(x: np.ndarray, dtype: np.dtype, where: str) -> None:
    """Refuse to mix dtypes silently: the layer's parameters and its input must agree."""
    if x.dtype != dtype:
        raise TypeError(
            f"{where} has {dtype} parameters but got {x.dtype} input; cast the input with "
            f"x.astype(np.{dtype}) or convert the model with model.to(np.{x.dtype})"
        )


def check_same_shape(dout: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """Check that an upstream gradient has the shape of the forward output."""
    arr = check_float_array(dout, where)
    if arr.shape != shape:
        raise ValueError(
            f"{where} expects dout of shape {shape} (the forward output), got {arr.shape}"
        )
    return arr
