"""RMSprop (Hinton), with PyTorch's centred and momentum variants."""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.nn.parameter import Parameter
from handgrad.optim.optimizer import Optimizer, ParamsT, check_non_negative


def rmsprop_update(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
) -> None:
    """``s <- a s + (1 - a) g^2``; ``d = g / (sqrt(s - mean_g^2 if centred) + eps)``;
    with momentum ``b <- mu b + d`` and ``p <- p - lr b``, else ``p <- p - lr d``."""
    if "step" not in state:
        state["step"] = 0
        state["square_avg"] = np.zeros_like(p)
        if momentum > 0:
            state["momentum_buffer"] = np.zeros_like(p)
        if centered:
            state["grad_avg"] = np.zeros_like(p)
    state["step"] += 1
    if weight_decay:
        g = g + weight_decay * p
    sq = state["square_avg"]
    sq *= alpha
    sq += (1 - alpha) * g * g
    if centered:
        ga = state["grad_avg"]
        ga += (1 - alpha) * (g - ga)
        avg = np.sqrt(sq - ga * ga)
    else:
        avg = np.sqrt(sq)
    avg += eps
    if momentum > 0:
        buf = state["momentum_buffer"]
        buf *= momentum
        buf += g / avg
        p -= lr * buf
    else:
        p -= lr * (g / avg)


class RMSprop(Optimizer):
    """RMSprop, matching ``torch.optim.RMSprop``."""

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            dict(
                lr=lr,
                alpha=alpha,
                eps=eps,
                weight_decay=weight_decay,
                momentum=momentum,
                centered=centered,
                maximize=maximize,
            ),
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        check_non_negative(
            alpha=group["alpha"],
            eps=group["eps"],
            momentum=group["momentum"],
            weight_decay=group["weight_decay"],
        )

    def _update(
        self, param: Parameter, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        rmsprop_update(
            param.data,
            grad,
            state,
            lr=group["lr"],
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            centered=group["centered"],
        )
