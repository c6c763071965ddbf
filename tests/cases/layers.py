"""Cases for Linear, Dropout, Dropout2d, Flatten, Unflatten, Identity and Sequential."""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.nn.layers import Dropout, Dropout2d, Flatten, Identity, Linear, Unflatten
from handgrad.nn.module import Module, Sequential
from tests.cases import ModuleCase


def _normal(*shape: int) -> Any:
    return lambda rng: rng.standard_normal(shape)


def _linear(in_f: int, out_f: int, bias: bool = True) -> Any:
    return lambda rng: Linear(in_f, out_f, bias=bias, rng=rng, dtype=np.float64)


def _torch_linear(m: Module) -> Any:
    import torch

    assert isinstance(m, Linear)
    t = torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, dtype=torch.float64)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(m.weight.data))
        if m.bias is not None:
            t.bias.copy_(torch.from_numpy(m.bias.data))
    return t


def _torch_flatten(m: Module) -> Any:
    import torch

    return torch.nn.Flatten()


def _torch_unflatten(m: Module) -> Any:
    import torch

    assert isinstance(m, Unflatten)
    return torch.nn.Unflatten(m.dim, m.unflattened_size)


def _torch_identity(m: Module) -> Any:
    import torch

    return torch.nn.Identity()


def _torch_dropout_eval(m: Module) -> Any:
    import torch

    assert isinstance(m, Dropout)
    return torch.nn.Dropout(m.p).eval()


def _torch_dropout2d_eval(m: Module) -> Any:
    import torch

    assert isinstance(m, Dropout2d)
    return torch.nn.Dropout2d(m.p).eval()


def _reseed_dropout(m: Module) -> None:
    assert isinstance(m, Dropout)
    m.rng = np.random.default_rng(1234)


def _mlp(rng: np.random.Generator) -> Module:
    return Sequential(
        Linear(5, 7, rng=rng, dtype=np.float64),
        Flatten(),
        Linear(7, 3, rng=rng, dtype=np.float64),
    )


def _torch_mlp(m: Module) -> Any:
    import torch

    assert isinstance(m, Sequential)
    return torch.nn.Sequential(_torch_linear(m[0]), torch.nn.Flatten(), _torch_linear(m[2]))


MODULE_CASES = [
    ModuleCase("Linear", _linear(6, 4), _normal(5, 6), _torch_linear),
    ModuleCase("Linear-nobias", _linear(6, 4, bias=False), _normal(5, 6), _torch_linear),
    ModuleCase("Linear-3d", _linear(3, 2), _normal(4, 5, 3), _torch_linear),
    ModuleCase("Flatten", lambda rng: Flatten(), _normal(3, 2, 4), _torch_flatten),
    ModuleCase("Unflatten", lambda rng: Unflatten(1, (2, 1, 3)), _normal(4, 6), _torch_unflatten),
    ModuleCase(
        "Unflatten-last", lambda rng: Unflatten(-1, (2, 2)), _normal(3, 2, 4), _torch_unflatten
    ),
    ModuleCase("Identity", lambda rng: Identity(), _normal(3, 4), _torch_identity),
    ModuleCase(
        "Dropout-train",
        lambda rng: Dropout(0.3, rng=0),
        _normal(6, 5),
        no_torch="masks come from different generators; checked against the mask in tests",
        before_forward=_reseed_dropout,
        stochastic=True,
    ),
    ModuleCase(
        "Dropout-eval",
        lambda rng: Dropout(0.3, rng=0),
        _normal(6, 5),
        _torch_dropout_eval,
        train=False,
    ),
    ModuleCase(
        "Dropout2d-train",
        lambda rng: Dropout2d(0.4, rng=0),
        _normal(4, 5, 3, 2),
        no_torch="masks come from different generators; checked against the mask in tests",
        before_forward=_reseed_dropout,
        stochastic=True,
    ),
    ModuleCase(
        "Dropout2d-eval",
        lambda rng: Dropout2d(0.4, rng=0),
        _normal(4, 5, 3, 2),
        _torch_dropout2d_eval,
        train=False,
    ),
    ModuleCase("Sequential", _mlp, _normal(4, 5), _torch_mlp),
]
