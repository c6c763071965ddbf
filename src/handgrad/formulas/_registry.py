"""The registry behind :mod:`handgrad.formulas`: what a description is, how a class
gets one, and the generic one for a class that has none."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from handgrad.nn.loss import Loss
from handgrad.nn.module import Module

__all__ = [
    "FORMULAS",
    "LOSS_FORMULAS",
    "Description",
    "Step",
    "describe",
    "describe_loss",
    "register_formula",
    "register_loss_formula",
    "same_shapes",
    "shape",
]


@dataclass(frozen=True)
class Step:
    """One line of a pass: ``lhs = formula: shapes``.

    ``param`` names the parameter (its attribute, e.g. ``"weight"``) whose gradient
    a backward step computes; None for the output and the input gradient.
    """

    lhs: str
    formula: str
    shapes: str
    param: str | None = None


Values = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Description:
    """What a module or loss computes, forward and backward, for one input shape.

    ``values``, when given, returns named intermediate arrays worth printing for a
    network small enough to follow by hand (the ReLU mask, the softmax).
    """

    title: str
    forward: tuple[Step, ...]
    backward: tuple[Step, ...]
    values: Values | None = None


Describer = Callable[[Any, np.ndarray, np.ndarray], Description]
FORMULAS: dict[type, Describer] = {}
LOSS_FORMULAS: dict[type, Describer] = {}

F = TypeVar("F", bound=Describer)


def register_formula(*classes: type) -> Callable[[F], F]:
    """Register ``f(module, x, out) -> Description`` for modules of exactly these classes."""

    def decorate(f: F) -> F:
        for cls in classes:
            FORMULAS[cls] = f
        return f

    return decorate


def register_loss_formula(*classes: type) -> Callable[[F], F]:
    """Register ``f(loss, scores, target) -> Description`` for losses of exactly these classes."""

    def decorate(f: F) -> F:
        for cls in classes:
            LOSS_FORMULAS[cls] = f
        return f

    return decorate


def shape(a: np.ndarray | tuple[int, ...]) -> str:
    """``(64, 784)``; ``(128,)`` for one axis."""
    dims = a.shape if isinstance(a, np.ndarray) else a
    return str(tuple(int(d) for d in dims))


def describe(module: Module, x: np.ndarray, out: np.ndarray) -> Description:
    """The registered description of ``module`` (exact type), else the generic one."""
    return FORMULAS.get(type(module), _generic)(module, x, out)


def describe_loss(loss: Loss, scores: np.ndarray, target: np.ndarray) -> Description:
    """The registered description of ``loss`` (exact type), else the generic one."""
    return LOSS_FORMULAS.get(type(loss), _generic_loss)(loss, scores, target)


def same_shapes(x: np.ndarray, out: np.ndarray) -> tuple[str, str]:
    return f"{shape(x)} -> {shape(out)}", f"{shape(out)} -> {shape(x)}"


def _generic(m: Module, x: np.ndarray, out: np.ndarray) -> Description:
    name = type(m).__name__
    fwd, bwd = same_shapes(x, out)
    steps = [Step("dx", f"{name}.backward(dout)", bwd)]
    for pname, p in m.named_parameters():
        steps.append(Step(f"d{pname}", "accumulated by backward", shape(p.data), param=pname))
    return Description(
        f"{name} (no formula registered)",
        (Step("out", f"{name}.forward(x)", fwd),),
        tuple(steps),
    )


def _generic_loss(loss: Loss, z: np.ndarray, y: np.ndarray) -> Description:
    name = type(loss).__name__
    return Description(
        f"{name} (no formula registered)",
        (Step("L", f"{name}.forward(z, y)", f"{shape(z)}, {shape(y)} -> scalar"),),
        (Step("dz", f"{name}.backward()", f"-> {shape(z)}"),),
    )
