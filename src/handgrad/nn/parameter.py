"""The trainable tensor: a value and the gradient of the loss with respect to it."""

from __future__ import annotations

import numpy as np


class Parameter:
    """A trainable array and its gradient.

    ``data`` and ``grad`` always have the same shape and dtype. Backward passes
    accumulate into ``grad`` (``+=``) until :meth:`zero_grad` is called, so a
    parameter used twice in one graph receives both contributions.

    Parameters
    ----------
    data : array_like
        Initial value. Must be a floating-point array; it is copied.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray) -> None:
        arr = np.array(data, copy=True)
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"Parameter needs a floating-point array, got dtype {arr.dtype}")
        self.data: np.ndarray = arr
        self.grad: np.ndarray = np.zeros_like(arr)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    def zero_grad(self) -> None:
        """Reset the accumulated gradient to zero (in place, keeping the buffer)."""
        self.grad[...] = 0

    def astype(self, dtype: np.dtype | type) -> None:
        """Convert value and gradient to ``dtype`` in place of the old arrays."""
        self.data = self.data.astype(dtype)
        self.grad = np.zeros_like(self.data)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"
