"""``Optimizer``: parameter groups, per-parameter state keyed by the Parameter object.

As in PyTorch, ``param_groups`` is a list of dicts holding ``"params"`` and the
hyperparameters (``"lr"``, ...), which schedulers edit between steps, and
``state`` maps each :class:`~handgrad.nn.Parameter` to its buffers.
Subclasses implement ``_update(param, grad, state, group)`` with the update
maths in a pure function beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from handgrad.nn.parameter import Parameter

ParamsT = Iterable[Parameter] | Iterable[dict[str, Any]]


def check_lr(lr: float) -> None:
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning rate must be a positive number, got {lr!r}")


def check_betas(betas: tuple[float, ...]) -> None:
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")


def check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


def _python_numbers(group: dict[str, Any]) -> None:
    """Make ``group``'s NumPy scalars (``lr`` from ``np.logspace``) Python numbers, in
    place.

    A Python float is a "weak" scalar: ``float32_array * lr`` stays float32, as in
    PyTorch. A ``numpy.float64`` is not, and would run every operation of the update
    in float64 and round back: other numbers than PyTorch's, and slower."""
    for k, v in group.items():
        if isinstance(v, np.generic):
            group[k] = v.item()
        elif isinstance(v, tuple) and any(isinstance(b, np.generic) for b in v):
            group[k] = tuple(b.item() if isinstance(b, np.generic) else b for b in v)


class Optimizer:
    """Base class of every optimizer.

    Parameters
    ----------
    params : iterable of Parameter, or of dicts
        ``model.parameters()``, or groups ``{"params": [...], "lr": ...}`` whose
        missing hyperparameters come from ``defaults``.
    defaults : dict
        Default hyperparameters of each group.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Parameter, dict[str, Any]] = {}
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)  # type: ignore[arg-type]

    def _check_group(self, group: dict[str, Any]) -> None:
        """Validate a group's hyperparameters (subclasses extend this)."""
        check_lr(group["lr"])

    def add_param_group(self, group: dict[str, Any]) -> None:
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("a parameter group must be a dict with a 'params' entry")
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"{type(self).__name__} expects handgrad Parameters "
                    f"(model.parameters()), got {type(p).__name__}"
                )
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids) or seen.intersection(ids):
            raise ValueError("some parameters appear more than once in the optimizer")
        if not params:
            raise ValueError(f"{type(self).__name__} got a parameter group with no parameters")
        full = {**self.defaults, **group, "params": params}
        self._check_group(full)
        self.param_groups.append(full)

    def zero_grad(self) -> None:
        """Reset the gradient of every parameter to zero."""
        for group in self.param_groups:
            for p in group["params"]:
                p.zero_grad()

    def step(self) -> None:
        """Update every parameter from its ``grad``, in place."""
        for group in self.param_groups:
            _python_numbers(group)
            for p in group["params"]:
                grad = -p.grad if group.get("maximize", False) else p.grad
                self._update(p, grad, self.state.setdefault(p, {}), group)

    def _update(
        self, param: Parameter, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        raise NotImplementedError

    # -- (de)serialisation ----------------------------------------------------------------

    def _ordered(self) -> list[Parameter]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:
        """Plain data: ``{"state": {index: {...}}, "param_groups": [{..., "params": [index]}]}``."""
        index = {id(p): i for i, p in enumerate(self._ordered())}
        groups = []
        for g in self.param_groups:
            hyper = {
                k: (tuple(v) if isinstance(v, list) else v) for k, v in g.items() if k != "params"
            }
            groups.append({**hyper, "params": [index[id(p)] for p in g["params"]]})
        state = {
            index[id(p)]: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
            for p, s in self.state.items()
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore hyperparameters and buffers; the parameters must be laid out the same."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"state dict has {len(groups)} parameter groups, this optimizer has "
                f"{len(self.param_groups)}"
            )
        for i, (saved, mine) in enumerate(zip(groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(mine["params"]):
                raise ValueError(
                    f"parameter group {i} has {len(saved['params'])} parameters in the state "
                    f"dict but {len(mine['params'])} here"
                )
        params = self._ordered()
        new_state: dict[Parameter, dict[str, Any]] = {}
        for key, entries in state_dict["state"].items():
            idx = int(key)
            if not 0 <= idx < len(params):
                raise ValueError(f"state dict refers to parameter {idx}, there are {len(params)}")
            p = params[idx]
            restored: dict[str, Any] = {}
            for name, value in entries.items():
                if isinstance(value, np.ndarray) and value.ndim > 0:
                    if value.shape != p.shape:
                        raise ValueError(
                            f"state {name!r} of parameter {idx} has shape {value.shape}, "
                            f"the parameter has {p.shape}"
                        )
                    value = value.astype(p.dtype, copy=True)
                restored[name] = value
            new_state[p] = restored
        for saved, mine in zip(groups, self.param_groups, strict=True):
            for k, v in saved.items():
                if k != "params":
                    mine[k] = v
        self.state = new_state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(
                f"  group {i}: " + ", ".join(f"{k}={v}" for k, v in g.items() if k != "params")
            )
        return "\n".join([*lines, ")"])
