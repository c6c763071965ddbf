"""``summary(model, input_shape)``: a table of a network's layers, in the spirit of Keras's
``model.summary()`` and torchinfo.

Each row is a layer: its path (a nested ``Sequential``'s layers as ``"2.0"``, ``"2.1"``),
its type, the shape of its output for a batch of the given input shape, and its
parameter count. Shapes come from one forward pass of a two-sample batch of zeros in
evaluation mode, on a copy of the model: the model itself is left as it was (its
modes, its weights and running statistics, its generators, and what its last forward
kept, so a backward may still follow it).

>>> from handgrad import nn
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=0), nn.ReLU(),
...                       nn.Sequential(nn.Linear(3, 2, rng=1), nn.BatchNorm1d(2)))
>>> print(model.summary((2, 2)))
Layer (type)        Output shape   Param #
==========================================
0 (Flatten)         (N, 4)               0
1 (Linear)          (N, 3)              15
2 (ReLU)            (N, 3)               0
3.0 (Linear)        (N, 2)               8
3.1 (BatchNorm1d)   (N, 2)               8
==========================================
Input: (N, 2, 2) float32
Total params: 31 (132 B)
Trainable params: 27 (108 B)
Non-trainable params: 4 (24 B)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from handgrad.nn.module import _CACHE_ATTRIBUTES, Module, Sequential

WIDTH = 80  # the table fits a terminal of 80 columns
SAMPLES = 2  # batch norm without running statistics needs more than one value a channel


@dataclass
class _Row:
    path: str
    kind: str
    shape: str
    params: int


def _shape(shape: tuple[int, ...]) -> str:
    dims = ["N", *map(str, shape[1:])] if shape and shape[0] == SAMPLES else list(map(str, shape))
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def _counts(module: Module) -> tuple[int, int, int, int]:
    """Trainable scalars and their bytes; non-trainable (floating buffers: running
    statistics) and the bytes of every buffer."""
    params = list(module.parameters())
    buffers = [b for _, b in module.named_buffers()]
    floating = [b for b in buffers if np.issubdtype(b.dtype, np.floating)]
    return (
        sum(p.size for p in params),
        sum(p.data.nbytes for p in params),
        sum(int(b.size) for b in floating),
        sum(int(b.nbytes) for b in buffers),
    )


def _walk(module: Module, path: str, x: np.ndarray, rows: list[_Row]) -> np.ndarray:
    """Run ``module`` on ``x``, one row per layer; a Sequential (not one with a forward
    of its own) shows its layers instead of itself."""
    if isinstance(module, Sequential) and type(module).forward is Sequential.forward:
        for name, child in module._modules.items():
            x = _walk(child, f"{path}.{name}" if path else name, x, rows)
        return x
    try:
        out = module.forward(x)
    except Exception as exc:
        where = f"layer {path} ({type(module).__name__})" if path else type(module).__name__
        raise ValueError(
            f"summary: {where} cannot take input of shape {_shape(x.shape)}: {exc}"
        ) from exc
    trainable, _, frozen, _ = _counts(module)
    rows.append(_Row(path or "-", type(module).__name__, _shape(out.shape), trainable + frozen))
    return np.asarray(out)


def _probe(model: Module) -> Module:
    """A copy of ``model`` for one forward, without copying what its last forward kept."""
    memo: dict[int, Any] = {}
    for module in model.modules():
        for name in (*_CACHE_ATTRIBUTES, "_fused", "_scratch"):
            value = module.__dict__.get(name)
            if value is not None:
                memo[id(value)] = {} if name in ("_fused", "_scratch") else None
    return copy.deepcopy(model, memo)


def _size(nbytes: int) -> str:
    value, unit = float(nbytes), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{nbytes} B" if unit == "B" else f"{value:.1f} {unit}"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 1)] + "..."


def summary(
    model: Module,
    input_shape: int | Sequence[int],
    *,
    print_fn: Callable[[str], Any] | None = None,
) -> str:
    """A table of ``model``'s layers, output shapes and parameter counts, as a string.

    Parameters
    ----------
    model : Module
    input_shape : int or sequence of int
        One sample's shape, without the batch dimension: ``(784,)`` for flat MNIST
        images, ``(1, 28, 28)`` for a convolutional network's. Output shapes show the
        batch dimension as ``N``.
    print_fn : callable, optional
        Also called with the table (Keras's argument): ``print_fn=print`` prints it.

    Returns
    -------
    str
        One row per layer (path, type, output shape, parameters, running statistics
        included), then the input, and the total, trainable and non-trainable counts
        with their memory. At most 80 columns wide (long names are shortened).

    Raises
    ------
    ValueError
        Naming the first layer that cannot take its input's shape.
    """
    shape = (int(input_shape),) if isinstance(input_shape, (int, np.integer)) else input_shape
    shape = tuple(int(d) for d in shape)
    if any(d < 1 for d in shape):
        raise ValueError(f"summary: input_shape must hold positive sizes, got {shape}")
    dtype = next((p.dtype for p in model.parameters()), np.dtype(np.float32))
    rows: list[_Row] = []
    # The shapes come from a copy: the model keeps its mode, its caches (a backward
    # may still follow its last forward) and its generators' states.
    _walk(_probe(model).eval(), "", np.zeros((SAMPLES, *shape), dtype=dtype), rows)
    trainable, trainable_bytes, frozen, buffer_bytes = _counts(model)

    head = ("Layer (type)", "Output shape", "Param #")
    cells = [(f"{r.path} ({r.kind})", r.shape, f"{r.params:,}") for r in rows]
    w_shape = max([len(head[1]), *(len(c[1]) for c in cells)]) + 3
    w_param = max([len(head[2]), *(len(c[2]) for c in cells)])
    w_layer = max([len(head[0]), *(len(c[0]) for c in cells)]) + 3
    w_layer = min(w_layer, WIDTH - w_shape - w_param)
    lines = [f"{head[0]:<{w_layer}}{head[1]:<{w_shape}}{head[2]:>{w_param}}"]
    rule = "=" * (w_layer + w_shape + w_param)
    lines.append(rule)
    for layer, out, count in cells:
        lines.append(
            f"{_fit(layer, w_layer - 1):<{w_layer}}{_fit(out, w_shape - 1):<{w_shape}}"
            f"{count:>{w_param}}"
        )
    lines += [
        rule,
        _fit(f"Input: {_shape((SAMPLES, *shape))} {np.dtype(dtype)}", WIDTH),
        f"Total params: {trainable + frozen:,} ({_size(trainable_bytes + buffer_bytes)})",
        f"Trainable params: {trainable:,} ({_size(trainable_bytes)})",
        f"Non-trainable params: {frozen:,} ({_size(buffer_bytes)})",
    ]
    text = "\n".join(lines)
    if print_fn is not None:
        print_fn(text)
    return text
