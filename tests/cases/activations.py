"""Cases for every activation, each away from its kink, with its PyTorch twin."""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.nn import activations as act
from handgrad.nn.module import Module
from tests.cases import ModuleCase


def _away_from_zero(*shape: int) -> Any:
    def make(rng: np.random.Generator) -> np.ndarray:
        x = rng.standard_normal(shape) * 2
        return x + np.where(x >= 0, 0.1, -0.1)

    return make


def _wide(*shape: int) -> Any:
    return lambda rng: rng.standard_normal(shape) * 3


def _spread(low: float, high: float, n: int) -> Any:
    """Evenly spaced points, jittered so that none sits exactly on a grid point."""
    return lambda rng: np.linspace(low, high, n) + rng.uniform(-0.05, 0.05, n)


def _twin(name: str, **kwargs: Any) -> Any:
    def make(m: Module) -> Any:
        import torch

        return getattr(torch.nn, name)(**kwargs)

    return make


MODULE_CASES = [
    ModuleCase("ReLU", lambda r: act.ReLU(), _away_from_zero(5, 7), _twin("ReLU")),
    ModuleCase("ReLU-4d", lambda r: act.ReLU(), _away_from_zero(2, 3, 2, 4), _twin("ReLU")),
    ModuleCase("LeakyReLU", lambda r: act.LeakyReLU(), _away_from_zero(5, 7), _twin("LeakyReLU")),
    ModuleCase(
        "LeakyReLU-0.2",
        lambda r: act.LeakyReLU(0.2),
        _away_from_zero(5, 7),
        _twin("LeakyReLU", negative_slope=0.2),
    ),
    ModuleCase("ELU", lambda r: act.ELU(), _away_from_zero(5, 7), _twin("ELU")),
    ModuleCase("ELU-0.5", lambda r: act.ELU(0.5), _away_from_zero(5, 7), _twin("ELU", alpha=0.5)),
    ModuleCase("SELU", lambda r: act.SELU(), _away_from_zero(5, 7), _twin("SELU")),
    ModuleCase("GELU", lambda r: act.GELU(), _wide(5, 7), _twin("GELU")),
    # every erf centre 0, 1/4, ..., 6 and beyond, on both sides: x / sqrt(2) in [-6.4, 6.4]
    ModuleCase("GELU-erf-range", lambda r: act.GELU(), _spread(-9.0, 9.0, 73), _twin("GELU")),
    ModuleCase(
        "GELU-tanh",
        lambda r: act.GELU(approximate="tanh"),
        _wide(5, 7),
        _twin("GELU", approximate="tanh"),
    ),
    ModuleCase("SiLU", lambda r: act.SiLU(), _wide(5, 7), _twin("SiLU")),
    ModuleCase("Sigmoid", lambda r: act.Sigmoid(), _wide(5, 7), _twin("Sigmoid")),
    ModuleCase("Tanh", lambda r: act.Tanh(), _wide(5, 7), _twin("Tanh")),
    ModuleCase("Softmax", lambda r: act.Softmax(dim=-1), _wide(5, 7), _twin("Softmax", dim=-1)),
    ModuleCase(
        "Softmax-3d", lambda r: act.Softmax(dim=-1), _wide(3, 4, 5), _twin("Softmax", dim=-1)
    ),
    ModuleCase(
        "Softmax-dim0-3d", lambda r: act.Softmax(dim=0), _wide(3, 4, 5), _twin("Softmax", dim=0)
    ),
    ModuleCase(
        "Softmax-dim1-3d", lambda r: act.Softmax(dim=1), _wide(3, 4, 5), _twin("Softmax", dim=1)
    ),
    ModuleCase(
        "LogSoftmax", lambda r: act.LogSoftmax(dim=-1), _wide(5, 7), _twin("LogSoftmax", dim=-1)
    ),
    ModuleCase(
        "LogSoftmax-dim0-3d",
        lambda r: act.LogSoftmax(dim=0),
        _wide(3, 4, 5),
        _twin("LogSoftmax", dim=0),
    ),
    ModuleCase(
        "LogSoftmax-dim1-3d",
        lambda r: act.LogSoftmax(dim=1),
        _wide(3, 4, 5),
        _twin("LogSoftmax", dim=1),
    ),
]
