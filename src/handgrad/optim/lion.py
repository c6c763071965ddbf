"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms")."""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.nn.parameter import Parameter
from handgrad.optim.optimizer import Optimizer, ParamsT, check_betas, check_non_negative


def lion_update(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> None:
    """One Lion step on ``p`` in place.

    ``c = b1 m + (1 - b1) g``; ``p <- p (1 - lr wd) - lr sign(c)``; ``m <- b2 m + (1 - b2) g``.
    """
    if "exp_avg" not in state:
        state["exp_avg"] = np.zeros_like(p)
    m = state["exp_avg"]
    update = np.sign(beta1 * m + (1 - beta1) * g)
    if weight_decay:
        p *= 1 - lr * weight_decay
    p -= lr * update
    m *= beta2
    m += (1 - beta2) * g


class Lion(Optimizer):
    """Lion: sign of an interpolated momentum; use a learning rate 3-10x below Adam's."""

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, maximize=maximize)
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        check_betas(tuple(group["betas"]))
        check_non_negative(weight_decay=group["weight_decay"])

    def _update(
        self, param: Parameter, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        beta1, beta2 = group["betas"]
        lion_update(
            param.data,
            grad,
            state,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
        )
