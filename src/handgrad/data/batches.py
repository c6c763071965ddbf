"""Mini-batches: one pass over ``(x, y)`` in a shuffled order drawn from an explicit generator.

:func:`batches` is the loop of PyTorch's ``DataLoader`` for arrays in memory;
:func:`handgrad.train.fit` draws its order and cuts its batches with the same two
helpers, :func:`index_batches` and :func:`num_batches`, so a hand-written loop over
``batches(x, y, 64, rng=rng)`` sees the batches ``fit(..., batch_size=64, rng=rng)``
would train on, in the same order.

>>> import numpy as np
>>> from handgrad.data import batches, num_batches
>>> x, y = np.arange(10).reshape(5, 2), np.arange(5)
>>> rng = np.random.default_rng(0)
>>> [yb.tolist() for _, yb in batches(x, y, batch_size=2, rng=rng)]
[[2, 4], [3, 0], [1]]
>>> [yb.tolist() for _, yb in batches(x, y, batch_size=2, rng=rng)]  # a new order each pass
[[4, 1], [2, 0], [3]]
>>> [yb.tolist() for _, yb in batches(x, y, 2, shuffle=False, drop_last=True)]
[[0, 1], [2, 3]]
>>> num_batches(60_000, 128), num_batches(60_000, 128, drop_last=True)
(469, 468)
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import overload

import numpy as np


def _batch_size(batch_size: int) -> int:
    try:
        size = operator.index(batch_size)
    except TypeError:
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}") from None
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    return size


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Steps in one pass over ``n`` samples: ``ceil(n / batch_size)``, or
    ``n // batch_size`` when the last, smaller batch is dropped.

    What ``OneCycleLR(..., steps_per_epoch=...)`` needs for a run of
    ``fit(..., batch_size=batch_size)`` on ``n`` training samples (``fit`` keeps the
    last batch).
    """
    size = _batch_size(batch_size)
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return int(n) // size if drop_last else -(-int(n) // size)


def index_batches(
    order: np.ndarray, batch_size: int, *, drop_last: bool = False, start: int = 0
) -> Iterator[np.ndarray]:
    """Consecutive slices of ``order`` of ``batch_size`` indices each, from batch ``start``.

    The last one is shorter when ``len(order)`` is not a multiple of ``batch_size``,
    and left out with ``drop_last=True``. ``start`` skips the first batches (a resumed
    epoch continues where it stopped).
    """
    size = _batch_size(batch_size)
    for step in range(int(start), num_batches(len(order), size, drop_last)):
        yield order[step * size : (step + 1) * size]


@overload
def batches(
    x: np.ndarray,
    y: None = None,
    batch_size: int = 64,
    *,
    rng: np.random.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[np.ndarray]: ...


@overload
def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 64,
    *,
    rng: np.random.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


def batches(
    x: np.ndarray,
    y: np.ndarray | None = None,
    batch_size: int = 64,
    *,
    rng: np.random.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[np.ndarray] | Iterator[tuple[np.ndarray, np.ndarray]]:
    """One pass over the data in mini-batches: ``(xb, yb)`` pairs, or ``xb`` alone without ``y``.

    Parameters
    ----------
    x, y : numpy.ndarray
        Samples ``(N, ...)`` and, optionally, their labels ``(N, ...)``. Batches are
        taken as they are: integer images stay integers (``model(xb)`` takes floats:
        scale them, ``xb.astype(np.float32) / 255``).
    batch_size : int
        Samples per batch; the last batch holds what is left, unless ``drop_last``.
    rng : numpy.random.Generator
        Required to shuffle: each call draws one permutation from it
        (``rng.permutation(N)``, as :func:`~handgrad.train.fit` does every epoch), so
        passing the same generator every epoch gives a new order each epoch and the
        same seed gives the same orders. An int seed is refused: a seed given anew
        each epoch would repeat the first epoch's order.
    shuffle : bool
        False: the data's own order, and each batch is a view of ``x`` (and ``y``),
        not a copy; no ``rng`` needed.
    drop_last : bool
        Leave out the last batch when it is smaller than ``batch_size``.

    Yields
    ------
    (xb, yb) or xb
        ``xb`` of shape ``(B, ...)``, ``yb`` of shape ``(B, ...)``, ``B <= batch_size``.
    """
    size = _batch_size(batch_size)
    if y is not None and len(x) != len(y):
        raise ValueError(f"batches: x has {len(x)} samples but y has {len(y)}")
    n = len(x)
    if shuffle:
        if not isinstance(rng, np.random.Generator):
            got = "no rng" if rng is None else f"rng={type(rng).__name__}"
            raise TypeError(
                f"batches(shuffle=True) needs rng=numpy.random.Generator, created once "
                f"(rng = np.random.default_rng(0)) and passed every epoch; got {got} "
                "(or pass shuffle=False)"
            )
        return _take(x, y, index_batches(rng.permutation(n), size, drop_last=drop_last))
    cuts = (slice(i * size, (i + 1) * size) for i in range(num_batches(n, size, drop_last)))
    return _take(x, y, cuts)


def _take(
    x: np.ndarray, y: np.ndarray | None, picks: Iterator[np.ndarray] | Iterator[slice]
) -> Iterator[np.ndarray] | Iterator[tuple[np.ndarray, np.ndarray]]:
    if y is None:
        return (x[p] for p in picks)
    return ((x[p], y[p]) for p in picks)
