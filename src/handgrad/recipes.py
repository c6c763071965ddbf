"""Named building blocks for the command line: the one registry of names -> objects.

The library itself takes objects (``ReLU()``, ``Adam(...)``); only the command
line and saved configurations need names, and they all come from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from handgrad._random import as_generator
from handgrad.nn import activations
from handgrad.nn.layers import Dropout, Flatten, Linear
from handgrad.nn.module import Module, Sequential
from handgrad.nn.normalization import BatchNorm1d
from handgrad.optim import SGD, Adagrad, Adam, AdamW, Lion, Optimizer, RMSprop, lr_scheduler

ACTIVATIONS: dict[str, Callable[[], Module]] = {
    "relu": activations.ReLU,
    "leaky_relu": activations.LeakyReLU,
    "elu": activations.ELU,
    "selu": activations.SELU,
    "gelu": activations.GELU,
    "silu": activations.SiLU,
    "tanh": activations.Tanh,
    "sigmoid": activations.Sigmoid,
}

OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": lambda params, lr, weight_decay: SGD(
        params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
    ),
    "adam": lambda params, lr, weight_decay: Adam(params, lr=lr, weight_decay=weight_decay),
    "adamw": lambda params, lr, weight_decay: AdamW(params, lr=lr, weight_decay=weight_decay),
    "rmsprop": lambda params, lr, weight_decay: RMSprop(params, lr=lr, weight_decay=weight_decay),
    "adagrad": lambda params, lr, weight_decay: Adagrad(params, lr=lr, weight_decay=weight_decay),
    "lion": lambda params, lr, weight_decay: Lion(params, lr=lr, weight_decay=weight_decay),
}

# Peak learning rates of the command line's recipe, per optimizer.
DEFAULT_LR = {
    "adam": 5e-3,
    "adamw": 5e-3,
    "sgd": 0.2,
    "rmsprop": 1e-3,
    "adagrad": 0.05,
    "lion": 4e-4,
}

SCHEDULES = ("onecycle", "cosine", "step", "constant")


def build_mlp(
    in_features: int,
    hidden: Sequence[int],
    num_classes: int,
    *,
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    rng: np.random.Generator | int | None = None,
    dtype: np.dtype | type = np.float32,
) -> Sequential:
    """``Flatten -> [Linear -> (BatchNorm) -> act -> (Dropout)] * len(hidden) -> Linear``.

    The output layer gives raw scores; the softmax lives in the loss.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    generator = as_generator(rng)
    layers: list[Module] = [Flatten()]
    width = in_features
    for size in hidden:
        layers.append(Linear(width, size, rng=generator, dtype=dtype))
        if batch_norm:
            layers.append(BatchNorm1d(size, dtype=dtype))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(Dropout(dropout, rng=generator))
        width = size
    layers.append(Linear(width, num_classes, rng=generator, dtype=dtype))
    return Sequential(*layers)


def make_optimizer(name: str, model: Module, lr: float, weight_decay: float = 0.0) -> Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](model.parameters(), lr, weight_decay)


def make_scheduler(
    name: str, optimizer: Optimizer, *, lr: float, epochs: int, steps_per_epoch: int
) -> tuple[Any, str]:
    """Return ``(scheduler or None, interval)`` for a schedule name."""
    if name == "constant":
        return None, "epoch"
    if name == "onecycle":
        group = optimizer.param_groups[0]
        sched = lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            # Adagrad has neither momentum nor betas: cycle only what the optimizer has.
            cycle_momentum="betas" in group or "momentum" in group,
        )
        return sched, "batch"
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch), "batch"
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1), "epoch"
    raise ValueError(f"unknown schedule {name!r}; choose from {list(SCHEDULES)}")
