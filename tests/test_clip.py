from __future__ import annotations

import math

import numpy as np
import pytest

from handgrad.nn.parameter import Parameter
from handgrad.optim import clip_grad_norm_, clip_grad_value_

torch = pytest.importorskip("torch")


def _pair(scale: float) -> tuple[list[Parameter], list[torch.Tensor]]:
    rng = np.random.default_rng(0)
    ours, theirs = [], []
    for shape in [(4, 3), (5,), (2, 2, 2)]:
        g = rng.standard_normal(shape) * scale
        p = Parameter(np.zeros(shape))
        p.grad = g.copy()
        t = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        t.grad = torch.from_numpy(g.copy())
        ours.append(p)
        theirs.append(t)
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_clip_grad_norm_matches_torch(norm_type: float, scale: float) -> None:
    ours, theirs = _pair(scale)
    before = [p.grad.copy() for p in ours]
    total = clip_grad_norm_(ours, max_norm=1.0, norm_type=norm_type)
    total_t = torch.nn.utils.clip_grad_norm_(theirs, max_norm=1.0, norm_type=norm_type)
    assert total == pytest.approx(float(total_t), rel=1e-12)
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)
    if scale == 0.01:  # under the limit: the gradients are left exactly as they were
        for p, b in zip(ours, before, strict=True):
            np.testing.assert_array_equal(p.grad, b)


def test_clip_grad_value_matches_torch() -> None:
    ours, theirs = _pair(3.0)
    clip_grad_value_(ours, 0.5)
    torch.nn.utils.clip_grad_value_(theirs, 0.5)
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(p.grad, t.grad.numpy())


def test_non_finite_norm_can_raise() -> None:
    ours, _ = _pair(1.0)
    ours[0].grad[0, 0] = np.inf
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
