"""Loss input validation and identities between the loss options."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad.nn import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    FocalLoss,
    HuberLoss,
    MSELoss,
    MultiMarginLoss,
    NLLLoss,
)

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 3))
Y = np.array([0, 2, 1, 2])


def test_one_hot_targets_equal_class_indices() -> None:
    a, b = CrossEntropyLoss(), CrossEntropyLoss()
    assert a(X, Y) == pytest.approx(b(X, np.eye(3)[Y]), rel=1e-12)
    np.testing.assert_allclose(a.backward(), b.backward(), rtol=1e-12)


def test_sum_is_n_times_mean() -> None:
    assert CrossEntropyLoss(reduction="sum")(X, Y) == pytest.approx(4 * CrossEntropyLoss()(X, Y))


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    f, c = FocalLoss(gamma=0.0), CrossEntropyLoss()
    assert f(X, Y) == pytest.approx(c(X, Y), rel=1e-12)
    np.testing.assert_allclose(f.backward(), c.backward(), rtol=1e-10)


def test_everything_ignored_gives_zero_gradient() -> None:
    loss = CrossEntropyLoss(reduction="sum")
    assert loss(X, np.full(4, -100)) == 0.0
    assert not loss.backward().any()


@pytest.mark.parametrize(
    ("loss", "x", "target", "error", "message"),
    [
        (
            CrossEntropyLoss(),
            X,
            np.array([0, 3, 1, 2]),
            ValueError,
            "target 3 is out of range for 3 classes",
        ),
        (CrossEntropyLoss(), X, np.array([0, -1, 1, 2]), ValueError, "target -1 is out of range"),
        (
            CrossEntropyLoss(),
            X,
            np.array([0, 1, 2]),
            ValueError,
            r"targets of shape \(4,\), got \(3,\)",
        ),
        (CrossEntropyLoss(), X, np.full((4, 2), 0.5), ValueError, r"targets of shape \(4, 3\)"),
        (CrossEntropyLoss(), X, np.full((4, 3), 0.5), ValueError, "rows summing to 1"),
        (CrossEntropyLoss(), X, np.where(np.eye(3)[Y] > 0, np.nan, 0.0), ValueError, "NaN"),
        (CrossEntropyLoss(), X.astype(np.int64), Y, TypeError, "floating-point array"),
        (CrossEntropyLoss(), X[0], Y[:1], ValueError, r"scores of shape \(N, C\)"),
        (NLLLoss(), X, Y.astype(np.float64), TypeError, "integer class indices"),
        (NLLLoss(), X, np.array([0, 1, 5, 1]), ValueError, "target 5 is out of range"),
        (BCEWithLogitsLoss(), X, np.full((4, 3), 1.5), ValueError, r"targets must lie in \[0, 1\]"),
        (BCEWithLogitsLoss(), X, np.ones((4, 3), np.int64), TypeError, "floating-point targets"),
        (MSELoss(), X, np.zeros((4, 2)), ValueError, r"targets of shape \(4, 3\)"),
        (MultiMarginLoss(), X, np.array([0, 1, 3, 0]), ValueError, "target 3 is out of range"),
        (FocalLoss(), X[:, :, None], Y, ValueError, r"scores of shape \(N, C\)"),
        (CrossEntropyLoss(weight=np.ones(2)), X, Y, ValueError, r"weight must have shape \(3,\)"),
    ],
)
def test_bad_input_is_named(loss, x, target, error, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        loss(x, target)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="reduction must be one of"):
        CrossEntropyLoss(reduction="none")
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
        CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="delta must be positive"):
        HuberLoss(delta=0.0)
    with pytest.raises(ValueError, match="p=1 or p=2"):
        MultiMarginLoss(p=3)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        FocalLoss(gamma=-1.0)
