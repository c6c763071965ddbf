"""Cases for MaxPool2d, AvgPool2d and AdaptiveAvgPool2d, with their PyTorch twins.

Max pooling gets inputs without near-ties (a scaled permutation, gaps of 0.05):
the numeric gradient of a window's maximum is only defined away from ties.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.nn.module import Module
from handgrad.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from tests.cases import ModuleCase


def _normal(*shape: int) -> Any:
    return lambda rng: rng.standard_normal(shape)


def distinct(*shape: int) -> Any:
    """Every value different, at least 0.05 apart, in about [-size/40, size/40]."""

    def make(rng: np.random.Generator) -> np.ndarray:
        size = int(np.prod(shape))
        return ((rng.permutation(size) - size / 2) * 0.05).reshape(shape)

    return make


def torch_maxpool(m: Module) -> Any:
    import torch

    assert isinstance(m, MaxPool2d)
    return torch.nn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation)


def _torch_avgpool(m: Module) -> Any:
    import torch

    assert isinstance(m, AvgPool2d)
    return torch.nn.AvgPool2d(
        m.kernel_size,
        m.stride,
        m.padding,
        count_include_pad=m.count_include_pad,
        divisor_override=m.divisor_override,
    )


def torch_adaptive(m: Module) -> Any:
    import torch

    assert isinstance(m, AdaptiveAvgPool2d)
    return torch.nn.AdaptiveAvgPool2d(m.output_size)


def _maxpool(*args: Any, **kwargs: Any) -> Any:
    return lambda rng: MaxPool2d(*args, **kwargs)


def _avgpool(*args: Any, **kwargs: Any) -> Any:
    return lambda rng: AvgPool2d(*args, **kwargs)


def _adaptive(size: Any) -> Any:
    return lambda rng: AdaptiveAvgPool2d(size)


MODULE_CASES = [
    ModuleCase("MaxPool2d", _maxpool(2), distinct(2, 3, 6, 5), torch_maxpool),
    ModuleCase(
        "MaxPool2d-k3-s2-p1", _maxpool(3, stride=2, padding=1), distinct(2, 2, 7, 6), torch_maxpool
    ),
    ModuleCase(
        "MaxPool2d-dilation2",
        _maxpool(2, stride=1, dilation=2),
        distinct(2, 2, 6, 7),
        torch_maxpool,
    ),
    ModuleCase(
        "MaxPool2d-nonsquare",
        _maxpool((2, 3), stride=(1, 2), padding=(1, 1)),
        distinct(2, 2, 5, 8),
        torch_maxpool,
    ),
    ModuleCase("MaxPool2d-batch1", _maxpool(3, stride=1), distinct(1, 2, 5, 4), torch_maxpool),
    ModuleCase("AvgPool2d", _avgpool(2), _normal(2, 3, 6, 5), _torch_avgpool),
    ModuleCase(
        "AvgPool2d-k3-s2-p1", _avgpool(3, stride=2, padding=1), _normal(2, 2, 7, 6), _torch_avgpool
    ),
    ModuleCase(
        "AvgPool2d-nopadcount",
        _avgpool(3, stride=2, padding=1, count_include_pad=False),
        _normal(2, 2, 7, 6),
        _torch_avgpool,
    ),
    ModuleCase(
        "AvgPool2d-nonsquare-nopadcount",
        _avgpool((3, 2), stride=(1, 2), padding=(1, 1), count_include_pad=False),
        _normal(2, 2, 5, 7),
        _torch_avgpool,
    ),
    ModuleCase(
        "AvgPool2d-divisor",
        _avgpool(2, stride=1, padding=1, divisor_override=3),
        _normal(2, 2, 4, 5),
        _torch_avgpool,
    ),
    ModuleCase("AdaptiveAvgPool2d-1", _adaptive(1), _normal(2, 3, 5, 4), torch_adaptive),
    ModuleCase("AdaptiveAvgPool2d-2x3", _adaptive((2, 3)), _normal(2, 3, 7, 5), torch_adaptive),
    ModuleCase(
        "AdaptiveAvgPool2d-None-2", _adaptive((None, 2)), _normal(2, 2, 3, 5), torch_adaptive
    ),
    # more bins than pixels: the bins overlap and a pixel feeds several outputs
    ModuleCase(
        "AdaptiveAvgPool2d-upsample", _adaptive((4, 7)), _normal(2, 2, 3, 5), torch_adaptive
    ),
]
