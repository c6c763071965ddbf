"""Numeric gradient checks (float64, central differences) for every case."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad.gradcheck import gradcheck, gradcheck_loss, relative_error
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
