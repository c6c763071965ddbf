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
from handgrad.nn._spatial import output_size
from handgrad.nn.conv import Conv2d
from handgrad.nn.layers import Dropout, Flatten, Linear, Unflatten
from handgrad.nn.module import Module, Sequential
from handgrad.nn.normalization import BatchNorm1d, BatchNorm2d
from handgrad.nn.pooling import MaxPool2d
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


def _image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` from ``(H, W)`` (one channel) or ``(C, H, W)``."""
    shape = [int(v) for v in image_shape]
    if len(shape) == 2:
        shape.insert(0, 1)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (H, W) or (C, H, W), got {image_shape!r}")
    return shape[0], shape[1], shape[2]


def build_lenet(
    image_shape: Sequence[int] = (28, 28),
    num_classes: int = 10,
    *,
    rng: np.random.Generator | int | None = None,
    dtype: np.dtype | type = np.float32,
) -> Sequential:
    """The course's convolutional network::

        conv 32 3x3 -> ReLU -> max-pool 2 -> conv 64 3x3 -> ReLU -> max-pool 2
        -> fc 128 -> ReLU -> fc num_classes

    No padding, so 28x28 images become 26, 13, 11 and 5 pixels wide (1,600
    features after the second pool). It takes ``(N, H, W)``, ``(N, H*W)`` or
    ``(N, C, H, W)`` batches: a ``Flatten``/``Unflatten`` pair in front shapes
    them into ``(N, C, H, W)`` (views, no copies).
    """
    shape = _image_shape(image_shape)
    c, h, w = shape
    g = as_generator(rng)
    for _ in range(2):  # conv 3x3 (valid), then pool 2
        h, w = output_size(h, 3, 1, 0, 1) // 2, output_size(w, 3, 1, 0, 1) // 2
    if h < 1 or w < 1:
        raise ValueError(f"LeNet needs images of at least 10x10 pixels, got {image_shape!r}")
    return Sequential(
        Flatten(),
        Unflatten(1, shape),
        Conv2d(c, 32, 3, rng=g, dtype=dtype),
        activations.ReLU(),
        MaxPool2d(2),
        Conv2d(32, 64, 3, rng=g, dtype=dtype),
        activations.ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(64 * h * w, 128, rng=g, dtype=dtype),
        activations.ReLU(),
        Linear(128, num_classes, rng=g, dtype=dtype),
    )


def build_cnn(
    image_shape: Sequence[int] = (28, 28),
    num_classes: int = 10,
    *,
    rng: np.random.Generator | int | None = None,
    dtype: np.dtype | type = np.float32,
) -> Sequential:
    """The command line's best MNIST network (``--model cnn``): LeNet's shape with
    batch normalisation and a third convolution::

        [conv 32 3x3 same -> BN -> ReLU] -> max-pool 2
        -> [conv 64 3x3 same -> BN -> ReLU] -> max-pool 2
        -> [conv 128 3x3 -> BN -> ReLU] -> fc 10

    Trained with augmentation (shifts, rotations, scalings) by ``handgrad train
    --model cnn``; see ``docs/cnn.md`` for how it was chosen and what it costs.
    """
    shape = _image_shape(image_shape)
    c, h, w = shape
    g = as_generator(rng)
    h, w = h // 2 // 2, w // 2 // 2  # two "same" convolutions, each followed by a pool
    h, w = output_size(h, 3, 1, 0, 1), output_size(w, 3, 1, 0, 1)  # the valid 3x3
    if h < 1 or w < 1:
        raise ValueError(f"the cnn needs images of at least 12x12 pixels, got {image_shape!r}")

    def block(c_in: int, c_out: int, padding: int | str) -> list[Module]:
        return [
            Conv2d(c_in, c_out, 3, padding=padding, bias=False, rng=g, dtype=dtype),
            BatchNorm2d(c_out, dtype=dtype),
            activations.ReLU(),
        ]

    return Sequential(
        Flatten(),
        Unflatten(1, shape),
        *block(c, 32, "same"),
        MaxPool2d(2),
        *block(32, 64, "same"),
        MaxPool2d(2),
        *block(64, 128, 0),
        Flatten(),
        Linear(128 * h * w, num_classes, rng=g, dtype=dtype),
    )


MODELS = ("mlp", "lenet", "cnn")

# What `handgrad train --model NAME` uses when an option is not given.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"epochs": 15, "augment": False, "val_fraction": 0.1},
    "lenet": {"epochs": 10, "augment": False, "val_fraction": 0.1},
    # the best recipe trains on all 60,000 images (nothing is selected on validation)
    "cnn": {"epochs": 20, "augment": True, "val_fraction": 0.0},
}

# Peak learning rates of the convolutional recipes where they differ from DEFAULT_LR.
CONV_LR = {"adam": 3e-3, "adamw": 3e-3}


def default_lr(model: str, optimizer: str) -> float:
    """The command line's (peak) learning rate for a model and optimizer name."""
    if model != "mlp" and optimizer in CONV_LR:
        return CONV_LR[optimizer]
    return DEFAULT_LR[optimizer]


def default_augment() -> Any:
    """The augmentation of ``--augment``: shifts of up to 2 pixels, rotations of up
    to 10 degrees, scalings by 0.9-1.1, every image of every batch."""
    from handgrad.augment import Augment

    return Augment(max_shift=2.0, max_rotation=10.0, scale=(0.9, 1.1))


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
