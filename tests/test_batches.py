"""handgrad.data.batches: one pass in mini-batches, shuffled from an explicit generator."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad.data import batches, index_batches, num_batches

X = np.arange(22, dtype=np.float32).reshape(11, 2)
Y = np.arange(11)


def test_a_pass_covers_every_sample_once_in_the_generators_order() -> None:
    got = list(batches(X, Y, 4, rng=np.random.default_rng(3)))
    assert [len(yb) for _, yb in got] == [4, 4, 3]  # the last batch kept, smaller
    order = np.random.default_rng(3).permutation(11)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in got]), order)
    for xb, yb in got:
        np.testing.assert_array_equal(xb, X[yb])  # pairs stay together


def test_each_call_draws_a_new_order_and_the_same_seed_repeats_them() -> None:
    def orders(seed: int) -> list[list[int]]:
        rng = np.random.default_rng(seed)
        return [np.concatenate([yb for _, yb in batches(X, Y, 4, rng=rng)]).tolist() for _ in "ab"]

    first, second = orders(0)
    assert first != second and sorted(first) == sorted(second) == list(range(11))
    assert orders(0) == [first, second]


def test_drop_last_and_no_shuffle() -> None:
    kept = [yb.tolist() for _, yb in batches(X, Y, 4, shuffle=False)]
    assert kept == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    dropped = [yb.tolist() for _, yb in batches(X, Y, 4, shuffle=False, drop_last=True)]
    assert dropped == [[0, 1, 2, 3], [4, 5, 6, 7]]
    shuffled = list(batches(X, Y, 4, rng=np.random.default_rng(0), drop_last=True))
    assert [len(yb) for _, yb in shuffled] == [4, 4]
    assert len(list(batches(X, Y, 11, shuffle=False, drop_last=True))) == 1
    assert list(batches(X, Y, 12, shuffle=False, drop_last=True)) == []


def test_unshuffled_batches_are_views_and_x_alone_works() -> None:
    (first, *_) = batches(X, batch_size=5, shuffle=False)
    assert isinstance(first, np.ndarray) and np.shares_memory(first, X)
    assert [len(xb) for xb in batches(X, batch_size=5, rng=np.random.default_rng(0))] == [5, 5, 1]


def test_num_batches_and_index_batches() -> None:
    assert num_batches(11, 4) == 3 and num_batches(11, 4, drop_last=True) == 2
    assert num_batches(0, 4) == 0 and num_batches(60_000, 128) == 469
    order = np.arange(11)[::-1]
    assert [b.tolist() for b in index_batches(order, 4, start=1)] == [[6, 5, 4, 3], [2, 1, 0]]


def test_mistakes_are_named() -> None:
    with pytest.raises(TypeError, match=r"needs rng=numpy.random.Generator.*got no rng"):
        batches(X, Y, 4)
    with pytest.raises(TypeError, match="got rng=int"):
        batches(X, Y, 4, rng=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x has 11 samples but y has 10"):
        batches(X, Y[:10], 4, shuffle=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        batches(X, Y, 0, shuffle=False)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        num_batches(10, 2.5)  # type: ignore[arg-type]
