"""Toy datasets and train/validation splits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handgrad.data import (
    make_blobs,
    make_moons,
    make_spirals,
    make_xor,
    stratified_split,
    train_val_split,
)

Maker = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]

MAKERS: dict[str, tuple[Maker, int]] = {
    "xor": (lambda rng: make_xor(101, noise=0.1, rng=rng), 2),
    "moons": (lambda rng: make_moons(101, 0.1, rng), 2),
    "spirals": (lambda rng: make_spirals(101, 3, 0.05, rng), 3),
    "blobs": (lambda rng: make_blobs(101, 4, 0.5, rng), 4),
}


@pytest.mark.parametrize("name", list(MAKERS))
def test_shapes_dtypes_balance(name: str) -> None:
    make, n_classes = MAKERS[name]
    x, y = make(np.random.default_rng(0))
    assert x.shape == (101, 2) and x.dtype == np.float32
    assert y.shape == (101,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=n_classes)
    assert len(counts) == n_classes and counts.max() - counts.min() <= (2 if name == "xor" else 1)
    assert np.isfinite(x).all()
    assert not (np.diff(y) >= 0).all()  # shuffled, not sorted by class


@pytest.mark.parametrize("name", list(MAKERS))
def test_same_seed_same_bits(name: str) -> None:
    make, _ = MAKERS[name]
    x1, y1 = make(np.random.default_rng(42))
    x2, y2 = make(np.random.default_rng(42))
    x3, _ = make(np.random.default_rng(43))
    assert x1.tobytes() == x2.tobytes() and y1.tobytes() == y2.tobytes()
    assert x1.tobytes() != x3.tobytes()


def test_xor_classic_four_points() -> None:
    x, y = make_xor()
    np.testing.assert_array_equal(x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, [0, 1, 1, 0])
    assert x.dtype == np.float32
    x, y = make_xor(400, noise=0.0, rng=np.random.default_rng(0), dtype=np.float64)
    assert x.dtype == np.float64
    np.testing.assert_array_equal(y, np.logical_xor(x[:, 0], x[:, 1]))
    assert np.bincount(y).tolist() == [200, 200]
    with pytest.raises(TypeError, match=r"needs rng=numpy.random.Generator"):
        make_xor(8, noise=0.1)


def test_noise_free_geometry() -> None:
    rng = np.random.default_rng(0)
    x, y = make_moons(50, 0.0, rng, dtype=np.float64)
    np.testing.assert_allclose(np.hypot(x[y == 0, 0], x[y == 0, 1]), 1.0)
    np.testing.assert_allclose(np.hypot(x[y == 1, 0] - 1.0, x[y == 1, 1] - 0.5), 1.0)
    x, y = make_spirals(60, 3, 0.0, rng, dtype=np.float64)
    radius = np.hypot(x[:, 0], x[:, 1])
    assert radius.max() == pytest.approx(1.0) and radius.min() > 0
    centers = np.array([[0.0, 0.0, 0.0], [10.0, 10.0, 10.0]])
    x, y = make_blobs(20, centers, 0.0, rng, dtype=np.float64)
    assert x.shape == (20, 3)
    np.testing.assert_array_equal(x, centers[y])


def test_blobs_per_center_std() -> None:
    rng = np.random.default_rng(5)
    x, y = make_blobs(4000, [[0.0, 0.0], [20.0, 0.0]], np.array([0.1, 2.0]), rng)
    assert x[y == 0].std(axis=0) == pytest.approx([0.1, 0.1], rel=0.1)
    assert x[y == 1].std(axis=0) == pytest.approx([2.0, 2.0], rel=0.1)
    with pytest.raises(ValueError, match=r"one value or one per center \(2\)"):
        make_blobs(10, [[0.0, 0.0], [1.0, 1.0]], [1.0, 2.0, 3.0], rng)


def test_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"noise must be a finite number >= 0, got -0.1"):
        make_moons(10, -0.1, rng)
    with pytest.raises(ValueError, match=r"n_classes must be an integer >= 2, got 1"):
        make_spirals(10, 1, 0.1, rng)
    with pytest.raises(TypeError, match=r"got int"):
        make_moons(10, 0.1, 0)  # type: ignore[arg-type]


# -- splits ------------------------------------------------------------------


def _check_partition(train: np.ndarray, val: np.ndarray, n: int) -> None:
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.29, 0.5, 0.9])
def test_stratified_split_keeps_proportions(fraction: float) -> None:
    rng = np.random.default_rng(7)
    y = rng.permutation(np.repeat(np.arange(6), [1, 2, 7, 30, 101, 333]))
    train, val = stratified_split(y, fraction, rng)
    _check_partition(train, val, len(y))
    for cls in range(6):
        n_c = (y == cls).sum()
        n_val = (y[val] == cls).sum()
        assert abs(n_val - n_c * fraction) < 1  # within one sample per class
        assert (y[train] == cls).sum() >= 1  # every class keeps a training sample
    # The total is round(N * fraction) unless tiny classes cannot give their share.
    floors = sum(int((y == cls).sum() * fraction) for cls in range(6))
    target = int(len(y) * fraction + 0.5)  # rounded half up
    assert floors <= len(val) <= target
    if fraction <= 0.5:
        assert len(val) == target


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    fraction=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_stratified_split_properties(counts: list[int], fraction: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    train, val = stratified_split(y, fraction, rng)
    _check_partition(train, val, len(y))
    per_class_val = np.bincount(y[val], minlength=len(counts))
    assert (np.abs(per_class_val - np.array(counts) * fraction) < 1).all()
    assert (np.bincount(y[train], minlength=len(counts)) >= 1).all()


def test_stratified_split_singleton_class_goes_to_train() -> None:
    y = np.array([0, 0, 0, 0, 1])
    train, val = stratified_split(y, 0.4, np.random.default_rng(0))
    assert 4 in train.tolist() and len(val) == 2 and set(y[val].tolist()) == {0}


def test_stratified_split_is_deterministic_and_random() -> None:
    y = np.arange(1000) % 10
    a = stratified_split(y, 0.2, np.random.default_rng(1))
    b = stratified_split(y, 0.2, np.random.default_rng(1))
    c = stratified_split(y, 0.2, np.random.default_rng(2))
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])
    assert len(a[1]) == 200 and np.bincount(y[a[1]]).tolist() == [20] * 10


def test_stratified_split_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        stratified_split(np.zeros(4), 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"labels of shape \(N,\), got \(2, 2\)"):
        stratified_split(np.zeros((2, 2)), 0.5, np.random.default_rng(0))


@pytest.mark.parametrize("stratify", [True, False])
def test_train_val_split(stratify: bool) -> None:
    rng = np.random.default_rng(3)
    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = np.arange(100) % 4
    x_before = x.copy()
    x_tr, y_tr, x_val, y_val = train_val_split(x, y, 0.2, rng, stratify=stratify)
    assert x_tr.shape == (80, 2) and x_val.shape == (20, 2) and len(y_tr) == 80
    rows = np.concatenate([x_tr[:, 0], x_val[:, 0]]) // 2
    np.testing.assert_array_equal(np.sort(rows), np.arange(100))
    np.testing.assert_array_equal(y_val, (x_val[:, 0] // 2) % 4)  # pairs stay together
    if stratify:
        assert np.bincount(y_val).tolist() == [5, 5, 5, 5]
    np.testing.assert_array_equal(x, x_before)
    with pytest.raises(ValueError, match=r"x has 100 samples but y has 99 labels"):
        train_val_split(x, y[:99], 0.2, rng)
