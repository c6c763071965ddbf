"""``handgrad gradcheck``: numeric gradient checks of every layer, activation and loss.

The test suite checks a larger registry (with PyTorch twins) in ``tests/cases``;
this is the user-facing version that runs from an installed package.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from handgrad.gradcheck import gradcheck, gradcheck_loss
from handgrad.nn import activations as act
from handgrad.nn import losses
from handgrad.nn.conv import Conv2d
from handgrad.nn.layers import Dropout, Dropout2d, Flatten, Identity, Linear
from handgrad.nn.loss import Loss
from handgrad.nn.module import Module, Sequential
from handgrad.nn.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from handgrad.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

F64 = np.float64


def _away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normal samples pushed at least 0.1 away from 0, the kink of ReLU-like functions."""
    x = rng.standard_normal(shape)
    return x + np.where(x >= 0, 0.1, -0.1)


def _module_cases() -> list[tuple[str, Callable[[np.random.Generator], Module], tuple[int, ...]]]:
    return [
        ("Linear", lambda r: Linear(6, 4, rng=r, dtype=F64), (5, 6)),
        (
            "Sequential(Linear, Tanh, Linear)",
            lambda r: Sequential(
                Linear(5, 7, rng=r, dtype=F64), act.Tanh(), Linear(7, 3, rng=r, dtype=F64)
            ),
            (4, 5),
        ),
        (
            "Conv2d (3x3, padding 1)",
            lambda r: Conv2d(3, 4, 3, padding=1, rng=r, dtype=F64),
            (2, 3, 5, 6),
        ),
        (
            "Conv2d (stride 2, dilation 2, groups 2)",
            lambda r: Conv2d(4, 6, (3, 2), stride=2, dilation=2, groups=2, rng=r, dtype=F64),
            (2, 4, 9, 7),
        ),
        ("MaxPool2d (2x2)", lambda r: MaxPool2d(2), (2, 3, 6, 6)),
        ("MaxPool2d (3x3, stride 2, padding 1)", lambda r: MaxPool2d(3, 2, 1), (2, 3, 7, 6)),
        ("AvgPool2d (3x3, stride 2, padding 1)", lambda r: AvgPool2d(3, 2, 1), (2, 3, 7, 6)),
        ("AdaptiveAvgPool2d (1)", lambda r: AdaptiveAvgPool2d(1), (2, 3, 5, 4)),
        ("BatchNorm2d (train)", lambda r: BatchNorm2d(3, dtype=F64), (4, 3, 3, 2)),
        ("Dropout2d (eval)", lambda r: Dropout2d(0.3, rng=0).eval(), (2, 3, 4, 4)),
        ("Flatten", lambda r: Flatten(), (3, 2, 4)),
        ("Identity", lambda r: Identity(), (3, 4)),
        ("Dropout (eval)", lambda r: Dropout(0.3, rng=0).eval(), (6, 5)),
        ("BatchNorm1d (train)", lambda r: BatchNorm1d(4, dtype=F64), (8, 4)),
        ("BatchNorm1d (eval)", lambda r: BatchNorm1d(4, dtype=F64).eval(), (8, 4)),
        ("LayerNorm", lambda r: LayerNorm(5, dtype=F64), (4, 5)),
        ("ReLU", lambda r: act.ReLU(), (4, 6)),
        ("LeakyReLU", lambda r: act.LeakyReLU(0.1), (4, 6)),
        ("ELU", lambda r: act.ELU(), (4, 6)),
        ("SELU", lambda r: act.SELU(), (4, 6)),
        ("GELU", lambda r: act.GELU(), (4, 6)),
        ("GELU (tanh)", lambda r: act.GELU(approximate="tanh"), (4, 6)),
        ("SiLU", lambda r: act.SiLU(), (4, 6)),
        ("Sigmoid", lambda r: act.Sigmoid(), (4, 6)),
        ("Tanh", lambda r: act.Tanh(), (4, 6)),
        ("Softmax", lambda r: act.Softmax(dim=-1), (4, 6)),
        ("LogSoftmax", lambda r: act.LogSoftmax(dim=-1), (4, 6)),
    ]


def _loss_cases() -> list[
    tuple[
        str,
        Callable[[], Loss],
        Callable[[np.random.Generator], np.ndarray],
        Callable[[np.random.Generator], np.ndarray],
    ]
]:
    def classes(r: np.random.Generator) -> np.ndarray:
        return r.integers(0, 5, size=6)

    def scores(r: np.random.Generator) -> np.ndarray:
        return r.standard_normal((6, 5))

    def probs(r: np.random.Generator) -> np.ndarray:
        p = r.random((6, 5))
        return p / p.sum(axis=1, keepdims=True)

    def log_probs(r: np.random.Generator) -> np.ndarray:
        z = r.standard_normal((6, 5))
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def binary(r: np.random.Generator) -> np.ndarray:
        return r.random((6, 5))

    def regression(r: np.random.Generator) -> np.ndarray:
        return scores(r) + 0.5

    return [
        ("CrossEntropyLoss", losses.CrossEntropyLoss, scores, classes),
        (
            "CrossEntropyLoss (probabilities, smoothing 0.1)",
            lambda: losses.CrossEntropyLoss(label_smoothing=0.1),
            scores,
            probs,
        ),
        ("NLLLoss", losses.NLLLoss, log_probs, classes),
        ("BCEWithLogitsLoss", losses.BCEWithLogitsLoss, scores, binary),
        ("MSELoss", losses.MSELoss, scores, regression),
        ("L1Loss", losses.L1Loss, scores, regression),
        ("HuberLoss", lambda: losses.HuberLoss(delta=0.5), scores, regression),
        ("MultiMarginLoss", losses.MultiMarginLoss, scores, classes),
        ("FocalLoss", losses.FocalLoss, scores, classes),
    ]


def run_selfcheck(seed: int = 0) -> list[tuple[str, float, str]]:
    """Return ``(case, max relative error, worst tensor)`` for every case."""
    rows = []
    for name, make, shape in _module_cases():
        rng = np.random.default_rng(seed)
        module = make(rng)
        errors = gradcheck(module, _away_from_zero(rng, shape), rng=rng)
        worst = max(errors, key=lambda k: errors[k])
        rows.append((name, errors[worst], worst))
    for name, make_loss, inputs, targets in _loss_cases():
        rng = np.random.default_rng(seed)
        errors = gradcheck_loss(make_loss(), inputs(rng), targets(rng))
        rows.append((name, errors["input"], "input"))
    return rows
