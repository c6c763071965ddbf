"""The lab's contract: what ``NeuralNetwork`` must look like, checked by grader and checker.

The messages are the grader's one-line reasons, word for word.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

CONTRACT = {
    "__init__": ["self", "input_size", "hidden_size", "output_size", "lr"],
    "forward": ["self", "X"],
    "backward": ["self", "X", "y", "probs"],
    "train_step": ["self", "X", "y"],
    "predict": ["self", "X"],
}
INIT_DEFAULTS = {"input_size": 784, "hidden_size": 128, "output_size": 10, "lr": 0.01}
#: Accepted weight shapes: either orientation of each matrix, any shape of each bias.
WEIGHT_SHAPES = {"W1": ((784, 128), (128, 784)), "W2": ((128, 10), (10, 128))}
BIAS_SIZES = {"b1": 128, "b2": 10}
PARAMETERS = ("W1", "b1", "W2", "b2")


def signature_problem(cls: type) -> str | None:
    """What is wrong with the methods' signatures or ``__init__``'s defaults, or None."""
    for method, expected in CONTRACT.items():
        fn = getattr(cls, method, None)
        if fn is None or not callable(fn):
            return f"NeuralNetwork has no method {method}()"
        params = list(inspect.signature(fn).parameters.values())
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if names[: len(expected)] != expected:
            return (
                f"NeuralNetwork.{method} must take ({', '.join(expected)}), "
                f"got ({', '.join(names)})"
            )
        if method == "__init__":
            for p in params:
                if p.name in INIT_DEFAULTS and p.default != INIT_DEFAULTS[p.name]:
                    return (
                        f"NeuralNetwork.__init__ default {p.name}={p.default!r}, "
                        f"expected {INIT_DEFAULTS[p.name]!r}"
                    )
    return None


def weights_problem(model: Any) -> str | None:
    """None when W1, b1, W2, b2 are arrays of the lab's 784 -> 128 -> 10 network."""
    for name in PARAMETERS:
        if not isinstance(getattr(model, name, None), np.ndarray):
            return f"NeuralNetwork has no numpy array attribute {name}"
    for name, shapes in WEIGHT_SHAPES.items():
        shape = getattr(model, name).shape
        if shape not in shapes:
            return (
                f"NeuralNetwork.{name} has shape {shape}, expected {shapes[0]} or {shapes[1]} "
                "(the lab's network is 784 -> 128 -> 10)"
            )
    for name, size in BIAS_SIZES.items():
        if getattr(model, name).size != size:
            return (
                f"NeuralNetwork.{name} has {getattr(model, name).size} elements, expected "
                f"{size} (the lab's network is 784 -> 128 -> 10)"
            )
    return None
