"""Small 2-D classification sets for smoke tests and plots.

Every generator takes an explicit ``numpy.random.Generator``: the same seed
gives the same arrays, bit for bit. Classes are balanced (sizes differ by at
most one) and the samples are shuffled. Coordinates are drawn in float64 and
cast once to ``dtype`` (float32 by default, like the layers' parameters).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from handgrad._random import check_generator


def _check_count(n: int, minimum: int, what: str, where: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise ValueError(f"{where}: {what} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _check_noise(noise: float, where: str) -> float:
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"{where}: noise must be a finite number >= 0, got {noise!r}")
    return float(noise)


def _class_sizes(n_samples: int, n_classes: int) -> np.ndarray:
    """As even as possible: the first ``n_samples % n_classes`` classes get one more."""
    sizes = np.full(n_classes, n_samples // n_classes, dtype=np.int64)
    sizes[: n_samples % n_classes] += 1
    return sizes


def _finish(
    x: np.ndarray, y: np.ndarray, noise: float, rng: np.random.Generator, dtype: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Add Gaussian noise, shuffle, cast: the common tail of every generator."""
    if noise > 0:
        x = x + noise * rng.standard_normal(x.shape)
    order = rng.permutation(len(y))
    return x[order].astype(np.dtype(dtype)), y[order].astype(np.int64)


def make_xor(
    n_samples: int = 4,
    *,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
    dtype: Any = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """The XOR problem: corners of the unit square, label ``x0 XOR x1``.

    With the defaults this is the classic four points ``(0,0) (0,1) (1,0) (1,1)``
    with labels ``0 1 1 0``, in that order and with no randomness. Otherwise the
    corners are repeated to ``n_samples`` points, jittered by Gaussian noise of
    standard deviation ``noise`` and shuffled, which needs ``rng``.

    Shape
    -----
    ``x (n_samples, 2)``, ``y (n_samples,)`` int64.
    """
    n = _check_count(n_samples, 1, "n_samples", "make_xor")
    noise = _check_noise(noise, "make_xor")
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1, 0], dtype=np.int64)
    if n == 4 and noise == 0 and rng is None:
        return corners.astype(np.dtype(dtype)), labels
    gen = check_generator(rng, "make_xor (with noise or n_samples != 4)")
    pick = np.arange(n) % 4
    return _finish(corners[pick], labels[pick], noise, gen, dtype)


def make_moons(
    n_samples: int, noise: float, rng: np.random.Generator, *, dtype: Any = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles.

    Class 0: ``(cos t, sin t)``; class 1: ``(1 - cos t, 1/2 - sin t)``, with
    ``t`` evenly spaced in ``[0, pi]``, plus Gaussian noise of std ``noise``.

    Shape
    -----
    ``x (n_samples, 2)``, ``y (n_samples,)`` int64.
    """
    n = _check_count(n_samples, 2, "n_samples", "make_moons")
    noise = _check_noise(noise, "make_moons")
    gen = check_generator(rng, "make_moons")
    n0, n1 = _class_sizes(n, 2)
    t0 = np.linspace(0.0, np.pi, n0)
    t1 = np.linspace(0.0, np.pi, n1)
    upper = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    lower = np.stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    x = np.concatenate([upper, lower])
    y = np.repeat(np.arange(2), [n0, n1])
    return _finish(x, y, noise, gen, dtype)


def make_spirals(
    n_samples: int,
    n_classes: int,
    noise: float,
    rng: np.random.Generator,
    *,
    turns: float = 0.75,
    dtype: Any = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """``n_classes`` interleaved spiral arms around the origin.

    Arm ``k`` has radius ``r`` evenly spaced in ``(0, 1]`` and angle
    ``theta = 2 pi (k / n_classes + turns * r)``; points are
    ``r (cos theta, sin theta)`` plus Gaussian noise of std ``noise``.

    Shape
    -----
    ``x (n_samples, 2)``, ``y (n_samples,)`` int64.
    """
    k = _check_count(n_classes, 2, "n_classes", "make_spirals")
    n = _check_count(n_samples, k, "n_samples (at least one per class)", "make_spirals")
    noise = _check_noise(noise, "make_spirals")
    gen = check_generator(rng, "make_spirals")
    sizes = _class_sizes(n, k)
    arms = []
    for cls, size in enumerate(sizes):
        r = np.linspace(1.0 / size, 1.0, size)
        theta = 2.0 * np.pi * (cls / k + turns * r)
        arms.append(np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1))
    y = np.repeat(np.arange(k), sizes)
    return _finish(np.concatenate(arms), y, noise, gen, dtype)


def make_blobs(
    n_samples: int,
    centers: int | npt.ArrayLike,
    std: float | npt.ArrayLike,
    rng: np.random.Generator,
    *,
    box: float = 5.0,
    dtype: Any = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Gaussian clusters, one class per center.

    Parameters
    ----------
    centers : int or array of shape (K, D)
        The cluster centers, or how many to draw uniformly in ``[-box, box]^2``.
    std : float or array of shape (K,)
        Standard deviation of each cluster (one for all, or one per cluster).

    Shape
    -----
    ``x (n_samples, D)`` (``D = 2`` when centers is a count), ``y (n_samples,)`` int64.
    """
    gen = check_generator(rng, "make_blobs")
    if isinstance(centers, (int, np.integer)) and not isinstance(centers, bool):
        k = _check_count(int(centers), 1, "centers", "make_blobs")
        means = gen.uniform(-box, box, size=(k, 2))
    else:
        means = np.asarray(centers, dtype=np.float64)
        if means.ndim != 2 or len(means) == 0:
            raise ValueError(
                f"make_blobs: centers must be a count or an array of shape (K, D), "
                f"got shape {means.shape}"
            )
        k = len(means)
    n = _check_count(n_samples, k, "n_samples (at least one per center)", "make_blobs")
    stds = np.asarray(std, dtype=np.float64)
    if stds.ndim == 0:
        stds = np.full(k, float(stds))
    if stds.shape != (k,) or not (np.isfinite(stds).all() and (stds >= 0).all()):
        raise ValueError(
            f"make_blobs: std must be finite and >= 0, one value or one per center "
            f"({k}), got {std!r}"
        )
    sizes = _class_sizes(n, k)
    y = np.repeat(np.arange(k), sizes)
    x = means[y] + stds[y, None] * gen.standard_normal((n, means.shape[1]))
    return _finish(x, y, 0.0, gen, dtype)
