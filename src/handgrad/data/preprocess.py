"""Turning stored ``uint8`` images into network inputs, one batch at a time."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_float_images(x: np.ndarray, dtype: Any = np.float32, flatten: bool = True) -> np.ndarray:
    """Scale ``uint8`` pixels to ``[0, 1]``: ``x * (1 / 255)`` computed in ``dtype``.

    Meant to run per batch, so datasets stay ``uint8`` (4x less memory): one
    pass over the data, one new array, ``x`` untouched.

    Parameters
    ----------
    x : numpy.ndarray
        ``uint8`` images, e.g. ``(N, H, W)``.
    dtype : numpy floating dtype
        Output dtype (default float32).
    flatten : bool
        Reshape ``(N, *)`` to ``(N, prod(*))`` for fully connected networks.

    Shape
    -----
    ``(N, H, W) -> (N, H * W)`` with ``flatten``, else unchanged.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"to_float_images expects a numpy.ndarray, got {type(x).__name__}")
    if x.dtype != np.uint8:
        raise TypeError(
            f"to_float_images expects uint8 pixels in 0..255, got dtype {x.dtype}; "
            "floating-point images are probably already scaled"
        )
    out_dtype = np.dtype(dtype)
    if not np.issubdtype(out_dtype, np.floating):
        raise TypeError(f"to_float_images needs a floating-point dtype, got {out_dtype}")
    if flatten and x.ndim >= 2:
        x = x.reshape(len(x), -1)  # a view for contiguous input: no copy
    scale = out_dtype.type(1.0 / 255.0)
    return np.multiply(x, scale, dtype=out_dtype)
