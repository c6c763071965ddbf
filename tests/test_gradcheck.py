"""Numeric gradient checks (float64, central differences) for every case."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad.gradcheck import (
    GradcheckError,
    GradcheckResult,
    gradcheck,
    gradcheck_loss,
    relative_error,
)
from handgrad.nn.layers import Linear
from tests.cases import LOSS_CASES, MODULE_CASES, LossCase, ModuleCase

THRESHOLD = 1e-6


@pytest.mark.parametrize("case", MODULE_CASES, ids=str)
def test_module_gradient(case: ModuleCase) -> None:
    rng = np.random.default_rng(0)
    module = case.make(rng).train(case.train)
    x = case.input(rng)
    hook = case.before_forward
    errors = gradcheck(module, x, rng=rng, before_forward=(lambda: hook(module)) if hook else None)
    assert set(errors) == {"input", *(n for n, _ in module.named_parameters())}
    assert max(errors.values()) < THRESHOLD, errors


@pytest.mark.parametrize("case", LOSS_CASES, ids=str)
def test_loss_gradient(case: LossCase) -> None:
    rng = np.random.default_rng(0)
    errors = gradcheck_loss(case.make(), case.input(rng), case.target(rng))
    assert errors["input"] < THRESHOLD, errors


class _WrongLinear(Linear):
    """Linear whose weight gradient is off by 1%: the check must notice."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.weight.grad *= 1.01
        return dx


def test_gradcheck_catches_a_wrong_gradient() -> None:
    rng = np.random.default_rng(0)
    errors = gradcheck(_WrongLinear(4, 3, rng=rng, dtype=np.float64), rng.standard_normal((2, 4)))
    assert errors["input"] < THRESHOLD
    assert errors["weight"] > 1e-3


def test_gradcheck_refuses_float32() -> None:
    with pytest.raises(TypeError, match="float64"):
        gradcheck(Linear(3, 2, rng=0), np.zeros((2, 3), np.float32))


def test_relative_error_is_scale_aware() -> None:
    a = np.array([1.0, 0.0, -2.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(a, a + np.array([0.0, 1e-14, 0.0])) < 1e-10
    assert relative_error(a, a * 1.001) == pytest.approx(0.001 / 2.001, rel=1e-3)


def test_gradcheck_input_is_not_modified() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    before = x.copy()
    gradcheck(Linear(4, 2, rng=rng, dtype=np.float64), x)
    np.testing.assert_array_equal(x, before)


def test_result_is_a_verdict_against_a_stated_tolerance() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4))
    good = gradcheck(Linear(4, 3, rng=rng, dtype=np.float64), x)
    assert isinstance(good, GradcheckResult) and good.passed and bool(good)
    assert good.tolerance == THRESHOLD and good.failures == {}
    assert good.raise_if_failed() is good
    assert "Linear: passed (tolerance 1e-06)" in str(good)

    bad = gradcheck(_WrongLinear(4, 3, rng=rng, dtype=np.float64), x)
    assert not bad.passed and not bool(bad)
    assert set(bad.failures) == {"weight"} and bad.worst[0] == "weight"
    assert "FAILED" in str(bad) and "FAIL" in str(bad).splitlines()[2]
    with pytest.raises(GradcheckError, match=r"_WrongLinear: .*weight \d\.\d\de-0\d"):
        bad.raise_if_failed()
    with pytest.raises(GradcheckError, match="weight"):
        gradcheck(_WrongLinear(4, 3, rng=rng, dtype=np.float64), x, raise_on_fail=True)
    # A looser tolerance, stated by the caller, passes the same 1% error.
    assert gradcheck(_WrongLinear(4, 3, rng=rng, dtype=np.float64), x, tol=0.1).passed


def test_loss_result_and_nan_fails() -> None:
    from handgrad.nn.losses import MSELoss

    rng = np.random.default_rng(0)
    result = gradcheck_loss(MSELoss(), rng.standard_normal((3, 2)), rng.standard_normal((3, 2)))
    assert list(result) == ["input"] and result.passed and result.what == "MSELoss"
    nan = GradcheckResult({"input": 1e-9, "weight": float("nan")}, 1e-6, "X")
    assert not nan.passed and nan.worst[0] == "weight"
