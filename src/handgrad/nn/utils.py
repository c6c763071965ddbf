"""Gradient clipping, in place, with PyTorch's rules."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from handgrad.nn.parameter import Parameter


def clip_grad_norm_(
    parameters: Iterable[Parameter],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    """Scale all gradients together so their joint norm is at most ``max_norm``.

    The norm is taken over all gradients as if concatenated (``norm_type`` 1, 2, ...
    or ``inf``). When it exceeds ``max_norm`` every gradient is multiplied by
    ``max_norm / (norm + 1e-6)``. Returns the norm before clipping.
    """
    params = list(parameters)
    if not params:
        return 0.0
    p = float(norm_type)
    if math.isinf(p):
        total = max(float(np.max(np.abs(q.grad))) if q.grad.size else 0.0 for q in params)
    else:
        total = sum(float(np.sum(np.abs(q.grad.astype(np.float64)) ** p)) for q in params) ** (
            1 / p
        )
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"the total gradient norm is {total}: cannot clip non-finite gradients")
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for q in params:
            q.grad *= q.grad.dtype.type(coef)
    return total


def clip_grad_value_(parameters: Iterable[Parameter], clip_value: float) -> None:
    """Clip every gradient element into ``[-clip_value, clip_value]``."""
    if clip_value < 0:
        raise ValueError(f"clip_value must be >= 0, got {clip_value}")
    for q in parameters:
        np.clip(q.grad, -clip_value, clip_value, out=q.grad)
