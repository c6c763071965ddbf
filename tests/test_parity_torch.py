"""Outputs and every gradient match PyTorch, for every case that has a torch twin."""

from __future__ import annotations

import numpy as np
import pytest

from tests.cases import LOSS_CASES, MODULE_CASES, LossCase, ModuleCase
from tests.conftest import TOLERANCES

torch = pytest.importorskip("torch")

DTYPES = [np.float64, np.float32]
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


def _tol(dtype: type, scale: float) -> dict[str, float]:
    tol = TOLERANCES[dtype]
    if dtype is np.float32:
        return {k: v * scale for k, v in tol.items()}
    return tol


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", [c for c in MODULE_CASES if c.torch is not None], ids=str)
def test_module_matches_torch(case: ModuleCase, dtype: type) -> None:
    rng = np.random.default_rng(0)
    module = case.make(rng)
    twin = case.torch(module)  # type: ignore[misc]
    module.train(case.train).to(dtype)
    twin.train(case.train).to(TORCH_DTYPE[dtype])
    x = case.input(rng).astype(dtype)

    out = module.forward(x)
    dout = rng.standard_normal(out.shape).astype(dtype)
    module.zero_grad()
    dx = module.backward(dout)

    xt = torch.tensor(x, requires_grad=True)
    out_t = twin(xt)
    out_t.backward(torch.from_numpy(dout))

    tol = _tol(dtype, case.f32_scale)
    assert out.dtype == dtype and dx.dtype == dtype
    np.testing.assert_allclose(out, out_t.detach().numpy(), **tol, err_msg="output")
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol, err_msg="input gradient")
    twin_params = dict(twin.named_parameters())
    names = [name for name, _ in module.named_parameters()]
    assert sorted(names) == sorted(twin_params), "parameter names differ from PyTorch's"
    for name, param in module.named_parameters():
        assert param.grad.dtype == dtype
        np.testing.assert_allclose(param.grad, twin_params[name].grad.numpy(), **tol, err_msg=name)
    twin_state = twin.state_dict()
    for name, buf in module.named_buffers():
        np.testing.assert_allclose(buf, twin_state[name].numpy(), **tol, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", [c for c in LOSS_CASES if c.torch is not None], ids=str)
def test_loss_matches_torch(case: LossCase, dtype: type) -> None:
    rng = np.random.default_rng(0)
    loss = case.make()
    x = case.input(rng).astype(dtype)
    target = case.target(rng)
    if np.issubdtype(target.dtype, np.floating):
        target = target.astype(dtype)

    value = loss.forward(x, target)
    dx = loss.backward()

    xt = torch.tensor(x, requires_grad=True)
    value_t = case.torch(loss)(xt, torch.as_tensor(target))  # type: ignore[misc]
    value_t.backward()

    tol = _tol(dtype, case.f32_scale)
    assert isinstance(value, float)
    assert dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_allclose(value, value_t.item(), **tol, err_msg="loss value")
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol, err_msg="input gradient")
