"""Cases for BatchNorm1d, BatchNorm2d and LayerNorm with non-trivial weights and running stats."""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.nn.module import Module
from handgrad.nn.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from tests.cases import ModuleCase


def _randomise(m: Module, rng: np.random.Generator) -> Module:
    """Random affine parameters and running statistics, so the checks see every term."""
    for _, p in m.named_parameters():
        p.data = (rng.standard_normal(p.shape) * 0.5 + 1.0).astype(p.dtype)
        p.grad = np.zeros_like(p.data)
    bufs = m._buffers
    if "running_mean" in bufs:
        bufs["running_mean"] = rng.standard_normal(bufs["running_mean"].shape)
        bufs["running_var"] = rng.random(bufs["running_var"].shape) + 0.5
    return m


def _bn(c: int, **kwargs: Any) -> Any:
    return lambda rng: _randomise(BatchNorm1d(c, dtype=np.float64, **kwargs), rng)


def _bn2d(c: int, **kwargs: Any) -> Any:
    return lambda rng: _randomise(BatchNorm2d(c, dtype=np.float64, **kwargs), rng)


def _ln(shape: Any, **kwargs: Any) -> Any:
    return lambda rng: _randomise(LayerNorm(shape, dtype=np.float64, **kwargs), rng)


def _copy_into(m: Module, t: Any) -> Any:
    import torch

    with torch.no_grad():
        for name, p in m.named_parameters():
            dict(t.named_parameters())[name].copy_(torch.from_numpy(p.data))
        for name, b in m.named_buffers():
            dict(t.named_buffers())[name].copy_(torch.from_numpy(np.asarray(b)))
    return t


def torch_bn(m: Module) -> Any:
    """The ``torch.nn`` batch norm of the same name (1d or 2d), same options and state."""
    import torch

    assert isinstance(m, BatchNorm1d)
    t = getattr(torch.nn, type(m).__name__)(
        m.num_features,
        eps=m.eps,
        momentum=m.momentum,
        affine=m.affine,
        track_running_stats=m.track_running_stats,
        dtype=torch.float64,
    )
    return _copy_into(m, t)


def _torch_ln(m: Module) -> Any:
    import torch

    assert isinstance(m, LayerNorm)
    t = torch.nn.LayerNorm(
        m.normalized_shape,
        eps=m.eps,
        elementwise_affine=m.elementwise_affine,
        bias=m.bias is not None,
        dtype=torch.float64,
    )
    return _copy_into(m, t)


def _normal(*shape: int) -> Any:
    return lambda rng: rng.standard_normal(shape) * 2 + 0.5


MODULE_CASES = [
    ModuleCase("BatchNorm1d-train", _bn(4), _normal(8, 4), torch_bn),
    ModuleCase("BatchNorm1d-train-3d", _bn(3), _normal(5, 3, 4), torch_bn),
    ModuleCase("BatchNorm1d-eval", _bn(4), _normal(8, 4), torch_bn, train=False),
    ModuleCase("BatchNorm1d-eval-3d", _bn(3), _normal(5, 3, 4), torch_bn, train=False),
    ModuleCase("BatchNorm1d-noaffine", _bn(4, affine=False), _normal(8, 4), torch_bn),
    ModuleCase("BatchNorm1d-cumulative", _bn(4, momentum=None), _normal(8, 4), torch_bn),
    ModuleCase(
        "BatchNorm1d-nostats-eval",
        _bn(4, track_running_stats=False),
        _normal(8, 4),
        torch_bn,
        train=False,
    ),
    ModuleCase("BatchNorm2d-train", _bn2d(3), _normal(2, 3, 4, 5), torch_bn),
    ModuleCase("BatchNorm2d-train-batch1", _bn2d(2), _normal(1, 2, 3, 4), torch_bn),
    ModuleCase("BatchNorm2d-eval", _bn2d(3), _normal(2, 3, 4, 5), torch_bn, train=False),
    ModuleCase("BatchNorm2d-noaffine", _bn2d(3, affine=False), _normal(2, 3, 4, 5), torch_bn),
    ModuleCase("BatchNorm2d-cumulative", _bn2d(3, momentum=None), _normal(2, 3, 4, 5), torch_bn),
    ModuleCase(
        "BatchNorm2d-nostats-eval",
        _bn2d(3, track_running_stats=False),
        _normal(2, 3, 4, 5),
        torch_bn,
        train=False,
    ),
    ModuleCase("LayerNorm", _ln(6), _normal(4, 6), _torch_ln),
    ModuleCase("LayerNorm-2d", _ln((3, 4)), _normal(2, 5, 3, 4), _torch_ln),
    ModuleCase("LayerNorm-noaffine", _ln(6, elementwise_affine=False), _normal(4, 6), _torch_ln),
    ModuleCase("LayerNorm-nobias", _ln(6, bias=False), _normal(3, 2, 6), _torch_ln),
]
