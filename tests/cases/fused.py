"""Cases for ConvMaxPool, the fused Conv2d + MaxPool2d (+ ReLU) that ``Sequential`` runs.

Its PyTorch twin is the unfused chain. The cases cover both im2col layouts (patch
rows of ``KW * C >= 16`` numbers, and the transposed one for fewer), a fused ReLU or
none, convolution stride, padding and dilation, non-square pools and inputs whose
last rows no pooling window reads.
"""

from __future__ import annotations

from typing import Any

from handgrad.nn.activations import ReLU
from handgrad.nn.fused import ConvMaxPool
from handgrad.nn.module import Module
from handgrad.nn.pooling import MaxPool2d
from tests.cases import ModuleCase
from tests.cases.conv import _conv, _normal, torch_conv
from tests.cases.pooling import torch_maxpool


def _fused(*conv_args: Any, pool: Any = 2, relu: bool = True, **conv_kwargs: Any) -> Any:
    def make(rng: Any) -> Module:
        conv = _conv(*conv_args, **conv_kwargs)(rng)
        return ConvMaxPool(conv, MaxPool2d(pool), ReLU() if relu else None)

    return make


def _torch_fused(m: Module) -> Any:
    """The unfused chain, its parameters named like the fused module's (``conv.weight``)."""
    import torch

    assert isinstance(m, ConvMaxPool)

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch_conv(m.conv)
            self.pool = torch_maxpool(m.pool)

        def forward(self, x: Any) -> Any:
            y = self.pool(self.conv(x))
            return torch.relu(y) if m.relu is not None else y

    return Twin()


MODULE_CASES = [
    # 3 channels, 3 wide: transposed patches; conv 5x4, so the pool drops a row
    ModuleCase("ConvMaxPool", _fused(3, 4, 3, relu=False), _normal(2, 3, 7, 6), _torch_fused),
    ModuleCase("ConvMaxPool-ReLU-1ch", _fused(1, 4, 3), _normal(2, 1, 8, 9), _torch_fused),
    # 8 channels x 3 wide = 24 numbers a run: patch rows
    ModuleCase(
        "ConvMaxPool-ReLU-rows", _fused(8, 3, 3, padding=1), _normal(2, 8, 6, 7), _torch_fused
    ),
    ModuleCase(
        "ConvMaxPool-stride2-dilation2-pool2x3",
        _fused(2, 3, 3, stride=2, padding=2, dilation=2, pool=(2, 3)),
        _normal(1, 2, 9, 13),
        _torch_fused,
    ),
    ModuleCase(
        "ConvMaxPool-nobias-same-pool3",
        _fused(6, 2, (2, 3), padding="same", bias=False, pool=3),  # 6x9: no near tie
        _normal(2, 6, 6, 9),
        _torch_fused,
    ),
]
