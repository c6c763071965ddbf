"""Train/validation splits, stratified by class so the validation set looks like the data."""

from __future__ import annotations

import numpy as np

from handgrad._random import check_generator


def _check_fraction(val_fraction: float, where: str) -> float:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"{where}: val_fraction must be in [0, 1), got {val_fraction!r}")
    return float(val_fraction)


def _val_counts(counts: np.ndarray, val_fraction: float) -> np.ndarray:
    """Validation samples per class: floor or ceil of ``count * val_fraction``.

    Starts from the floors and hands the samples still missing to reach
    ``N * val_fraction`` (rounded half up) to the classes with the largest remainders
    (largest-remainder rounding), never taking the last sample of a class.
    """
    quota = counts * val_fraction
    n_val = np.floor(quota).astype(np.int64)  # <= counts - 1 because val_fraction < 1
    target = int(np.floor(counts.sum() * val_fraction + 0.5))
    can_grow = (n_val + 1 <= counts - 1) & (n_val < np.ceil(quota))
    order = np.argsort(-(quota - n_val), kind="stable")
    extra = max(target - int(n_val.sum()), 0)
    grow = [c for c in order if can_grow[c]][:extra]
    n_val[grow] += 1
    return n_val


def stratified_split(
    y: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and validation, class by class.

    Each class ``c`` with ``n_c`` samples sends ``floor`` or ``ceil`` of
    ``n_c * val_fraction`` samples (chosen at random) to validation, so class
    proportions match to within one sample per class, and the total is
    ``N * val_fraction`` rounded half up where possible. A class always keeps at least one
    training sample: a class with a single sample goes to training.

    Parameters
    ----------
    y : numpy.ndarray
        ``(N,)`` class labels (any values ``numpy.unique`` can sort).
    val_fraction : float
        Share of each class for validation, in ``[0, 1)``.
    rng : numpy.random.Generator
        Decides which samples go where.

    Returns
    -------
    train_idx, val_idx : numpy.ndarray
        Sorted, disjoint ``int64`` index arrays that together cover ``0 .. N-1``.
    """
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"stratified_split expects labels of shape (N,), got {labels.shape}")
    f = _check_fraction(val_fraction, "stratified_split")
    gen = check_generator(rng, "stratified_split")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n_val = _val_counts(counts, f)
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    train_parts, val_parts = [], []
    for members, k in zip(by_class, n_val, strict=True):
        shuffled = gen.permutation(members)
        val_parts.append(shuffled[:k])
        train_parts.append(shuffled[k:])
    empty = np.zeros(0, dtype=np.int64)
    train_idx = np.sort(np.concatenate([empty, *train_parts])).astype(np.int64)
    val_idx = np.sort(np.concatenate([empty, *val_parts])).astype(np.int64)
    return train_idx, val_idx


def train_val_split(
    x: np.ndarray,
    y: np.ndarray,
    val_fraction: float,
    rng: np.random.Generator,
    stratify: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split a dataset into training and validation parts.

    Parameters
    ----------
    x, y : numpy.ndarray
        Samples ``(N, ...)`` and labels ``(N,)``.
    val_fraction : float
        Share held out for validation, in ``[0, 1)``.
    rng : numpy.random.Generator
        Decides which samples go where.
    stratify : bool
        Keep class proportions (:func:`stratified_split`); else a plain random split
        of ``N * val_fraction`` samples (rounded half up).

    Returns
    -------
    x_train, y_train, x_val, y_val : numpy.ndarray
        New arrays (copies), in the original sample order.
    """
    if len(x) != len(y):
        raise ValueError(f"train_val_split: x has {len(x)} samples but y has {len(y)} labels")
    if stratify:
        train_idx, val_idx = stratified_split(y, val_fraction, rng)
    else:
        f = _check_fraction(val_fraction, "train_val_split")
        order = check_generator(rng, "train_val_split").permutation(len(y))
        n_val = int(np.floor(len(y) * f + 0.5))
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]
