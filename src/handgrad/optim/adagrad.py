"""Adagrad (Duchi et al., 2011)."""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.nn.parameter import Parameter
from handgrad.optim.optimizer import Optimizer, ParamsT, check_non_negative


def adagrad_update(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    *,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
) -> None:
    """``s <- s + g^2``; ``p <- p - lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)``."""
    state["step"] += 1
    if weight_decay:
        g = g + weight_decay * p
    clr = lr / (1 + (state["step"] - 1) * lr_decay)
    s = state["sum"]
    s += g * g
    p -= clr * (g / (np.sqrt(s) + eps))


class Adagrad(Optimizer):
    """Adagrad, matching ``torch.optim.Adagrad``."""

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            dict(
                lr=lr,
                lr_decay=lr_decay,
                weight_decay=weight_decay,
                initial_accumulator_value=initial_accumulator_value,
                eps=eps,
                maximize=maximize,
            ),
        )
        for group in self.param_groups:  # PyTorch creates the state eagerly
            for p in group["params"]:
                self.state[p] = {
                    "step": 0,
                    "sum": np.full_like(p.data, group["initial_accumulator_value"]),
                }

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        check_non_negative(
            lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"],
            initial_accumulator_value=group["initial_accumulator_value"],
            eps=group["eps"],
        )

    def _update(
        self, param: Parameter, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        adagrad_update(
            param.data,
            grad,
            state,
            lr=group["lr"],
            lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
        )
