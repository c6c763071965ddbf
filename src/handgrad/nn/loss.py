"""``Loss``: the base class of every loss function.

A loss takes raw scores (logits, predictions) and targets, returns a Python
``float``, and caches what :meth:`Loss.backward` needs to return the gradient of
the (reduced) loss with respect to the scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

REDUCTIONS = ("mean", "sum")


class Loss:
    """Base class: ``loss(scores, target) -> float`` then ``loss.backward() -> dscores``.

    Parameters
    ----------
    reduction : {"mean", "sum"}
        How per-sample losses are combined.
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self._cache: Any = None

    def __call__(self, input: np.ndarray, target: np.ndarray) -> float:
        return self.forward(input, target)

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:
        """Return the reduced loss and cache what backward needs."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        """Return ``d(dloss * loss) / d input``, same shape and dtype as the input."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def clear_cache(self) -> None:
        """Drop what the last forward kept for :meth:`backward` (see ``Module.clear_cache``)."""
        self._cache = None

    def _cached(self) -> Any:
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward(): compute the loss first"
            )
        return self._cache

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
