"""One registry of test cases for every module and loss.

Each file in this package defines ``MODULE_CASES`` and/or ``LOSS_CASES``; they
are collected here automatically, so a new concept adds a file and edits
nothing shared. The gradient-check, parity and property tests all run from
these lists, and ``tests/test_registry.py`` fails when a ``Module`` or ``Loss``
subclass in the package has no case.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handgrad.nn.loss import Loss
from handgrad.nn.module import Module


@dataclass(frozen=True)
class ModuleCase:
    """A module built in float64, an input away from kinks, and its PyTorch twin.

    ``make(rng)`` returns the handgrad module (float64). ``input(rng)`` returns
    a float64 input. ``torch(module)`` returns an equivalent ``torch.nn.Module``
    holding the same weights (float64; the parity test converts dtypes), or is
    None when no twin exists (say why in ``no_torch``). ``before_forward(module)``
    replays randomness for stochastic modules. ``train`` selects the mode.
    """

    name: str
    make: Callable[[np.random.Generator], Module]
    input: Callable[[np.random.Generator], np.ndarray]
    torch: Callable[[Module], Any] | None = None
    no_torch: str = ""
    train: bool = True
    before_forward: Callable[[Module], None] | None = None
    stochastic: bool = False
    # Extra tolerance factor for float32 parity (e.g. for exp-heavy functions).
    f32_scale: float = 1.0
    tags: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class LossCase:
    """A loss, float64 scores, valid targets and the PyTorch equivalent.

    ``torch(loss)`` returns ``f(input_tensor, target_tensor) -> scalar tensor``
    (``target`` is converted with ``torch.as_tensor``), or None with a reason in
    ``no_torch``.
    """

    name: str
    make: Callable[[], Loss]
    input: Callable[[np.random.Generator], np.ndarray]
    target: Callable[[np.random.Generator], np.ndarray]
    torch: Callable[[Loss], Any] | None = None
    no_torch: str = ""
    f32_scale: float = 1.0

    def __str__(self) -> str:
        return self.name


def _collect() -> tuple[list[ModuleCase], list[LossCase]]:
    modules: list[ModuleCase] = []
    losses: list[LossCase] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        modules.extend(getattr(mod, "MODULE_CASES", []))
        losses.extend(getattr(mod, "LOSS_CASES", []))
    names = [c.name for c in modules] + [c.name for c in losses]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RuntimeError(f"duplicate test case names: {dupes}")
    return modules, losses


MODULE_CASES, LOSS_CASES = _collect()
