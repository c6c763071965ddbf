"""Cases for Conv2d (every argument it has) and a small CNN, with their PyTorch twins."""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.nn.activations import ReLU
from handgrad.nn.conv import Conv2d
from handgrad.nn.layers import Flatten, Linear
from handgrad.nn.module import Module, Sequential
from handgrad.nn.normalization import BatchNorm2d
from handgrad.nn.pooling import AdaptiveAvgPool2d, MaxPool2d
from tests.cases import ModuleCase
from tests.cases.layers import _torch_linear
from tests.cases.normalization import torch_bn
from tests.cases.pooling import torch_adaptive, torch_maxpool


def _normal(*shape: int) -> Any:
    return lambda rng: rng.standard_normal(shape)


def _conv(*args: Any, **kwargs: Any) -> Any:
    """A float64 Conv2d with a random (non-zero) bias, so the bias gradient is checked."""

    def make(rng: np.random.Generator) -> Module:
        m = Conv2d(*args, rng=rng, dtype=np.float64, **kwargs)
        if m.bias is not None:
            m.bias.data = rng.standard_normal(m.bias.shape)
            m.bias.grad = np.zeros_like(m.bias.data)
        return m

    return make


def torch_conv(m: Module) -> Any:
    import torch

    assert isinstance(m, Conv2d)
    t = torch.nn.Conv2d(
        m.in_channels,
        m.out_channels,
        m.kernel_size,
        stride=m.stride,
        padding=m.padding,
        dilation=m.dilation,
        groups=m.groups,
        bias=m.bias is not None,
        dtype=torch.float64,
    )
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(m.weight.data))
        if m.bias is not None and t.bias is not None:
            t.bias.copy_(torch.from_numpy(m.bias.data))
    return t


def _cnn(rng: np.random.Generator) -> Module:
    bn = BatchNorm2d(4, dtype=np.float64)
    assert bn.weight is not None and bn.bias is not None
    bn.weight.data = rng.uniform(0.5, 1.5, 4)
    bn.bias.data = rng.standard_normal(4) * 0.5
    bn.zero_grad()
    return Sequential(
        # no bias before batch norm: it would be subtracted again, its gradient exactly 0
        _conv(3, 4, 3, padding=1, bias=False)(rng),
        bn,
        ReLU(),
        MaxPool2d(2),
        _conv(4, 5, (3, 2), padding="same")(rng),
        ReLU(),
        AdaptiveAvgPool2d(1),
        Flatten(),
        Linear(5, 3, rng=rng, dtype=np.float64),
    )


def _torch_cnn(m: Module) -> Any:
    import torch

    assert isinstance(m, Sequential)
    twins = {
        Conv2d: torch_conv,
        BatchNorm2d: torch_bn,
        ReLU: lambda _: torch.nn.ReLU(),
        MaxPool2d: torch_maxpool,
        AdaptiveAvgPool2d: torch_adaptive,
        Flatten: lambda _: torch.nn.Flatten(),
        Linear: _torch_linear,
    }
    return torch.nn.Sequential(*(twins[type(child)](child) for child in m))


MODULE_CASES = [
    ModuleCase("Conv2d", _conv(3, 4, 3), _normal(2, 3, 6, 5), torch_conv),
    ModuleCase("Conv2d-1x1", _conv(3, 2, 1), _normal(2, 3, 3, 4), torch_conv),
    ModuleCase(
        "Conv2d-stride2", _conv(2, 3, 3, stride=2, padding=1), _normal(2, 2, 7, 6), torch_conv
    ),
    ModuleCase(
        "Conv2d-stride-2x1-padding-pair",
        _conv(2, 3, 3, stride=(2, 1), padding=(0, 1)),
        _normal(2, 2, 7, 5),
        torch_conv,
    ),
    ModuleCase(
        "Conv2d-padding-pair-nonsquare",
        _conv(2, 3, (3, 2), padding=(2, 1)),
        _normal(2, 2, 4, 6),
        torch_conv,
    ),
    ModuleCase("Conv2d-same-odd", _conv(2, 3, 3, padding="same"), _normal(2, 2, 5, 6), torch_conv),
    # an even total pads one more pixel at the bottom/right, as PyTorch does
    ModuleCase(
        "Conv2d-same-even", _conv(2, 3, (4, 2), padding="same"), _normal(2, 2, 5, 6), torch_conv
    ),
    ModuleCase(
        "Conv2d-same-dilated",
        _conv(2, 2, (2, 3), padding="same", dilation=2),
        _normal(2, 2, 5, 6),
        torch_conv,
    ),
    ModuleCase(
        "Conv2d-valid", _conv(3, 2, (2, 4), padding="valid"), _normal(2, 3, 5, 6), torch_conv
    ),
    ModuleCase(
        "Conv2d-dilation2", _conv(2, 3, 3, padding=1, dilation=2), _normal(2, 2, 7, 8), torch_conv
    ),
    ModuleCase(
        "Conv2d-nonsquare-kernel",
        _conv(3, 2, (1, 3), stride=(1, 2)),
        _normal(2, 3, 4, 7),
        torch_conv,
    ),
    ModuleCase("Conv2d-batch1-odd", _conv(2, 3, 3, padding=1), _normal(1, 2, 5, 7), torch_conv),
    ModuleCase(
        "Conv2d-groups2", _conv(4, 6, 3, padding=1, groups=2), _normal(2, 4, 5, 4), torch_conv
    ),
    ModuleCase("Conv2d-nobias", _conv(3, 4, 3, bias=False), _normal(2, 3, 5, 6), torch_conv),
    ModuleCase("CNN", _cnn, _normal(2, 3, 6, 6), _torch_cnn),
]
