"""Numeric gradient checking by central differences.

The numeric gradient uses the fourth-order central difference
``(f(x-2h) - 8 f(x-h) + 8 f(x+h) - f(x+2h)) / 12h`` with ``h = 1e-4``: its
truncation error (O(h^4)) and its round-off (about 1e-16 / h) are both near
1e-12, two orders below what the two-point formula reaches, so a 1e-6
threshold has room to spare and still catches a gradient that is 0.1% off.

A module is checked through the scalar ``f = sum(module(x) * dout)`` for a fixed
random ``dout`` (the llm.c / CS231n trick): its gradient with respect to ``x``
is exactly what ``module.backward(dout)`` must return, and with respect to each
parameter what ``backward`` must accumulate into ``param.grad``.

Relative error, per element, is ``|a - n| / max(|a| + |n|, floor)`` where ``a``
is the analytic and ``n`` the numeric gradient. The floor is ``1e-4`` times the
largest ``|a| + |n|`` in the tensor (and at least ``1e-12``), so entries that
are zero up to round-off are measured against the tensor's scale instead of
dividing noise by noise. The check reports the maximum over elements.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from handgrad.nn.loss import Loss
from handgrad.nn.module import Module

DEFAULT_EPS = 1e-4


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """Maximum elementwise relative error between two gradients (see module docs)."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"gradient shapes differ: analytic {a.shape} vs numeric {n.shape}")
    if a.size == 0:
        return 0.0
    scale = np.abs(a) + np.abs(n)
    floor = max(1e-4 * float(scale.max()), 1e-12)
    return float(np.max(np.abs(a - n) / np.maximum(scale, floor)))


def numeric_gradient(f: Callable[[], float], x: np.ndarray, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Fourth-order central-difference gradient of ``f()`` with respect to ``x``.

    ``x`` is perturbed in place one element at a time and restored exactly;
    pass an array you own (a parameter's ``data`` or a private copy).
    """
    if not x.flags.c_contiguous or not x.flags.writeable:
        raise ValueError("numeric_gradient needs a writeable C-contiguous array to perturb")
    grad = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)  # a view, because x is C-contiguous
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        values = []
        for step in (-2.0, -1.0, 1.0, 2.0):
            flat[i] = old + step * eps
            values.append(f())
        flat[i] = old
        gflat[i] = (values[0] - 8.0 * values[1] + 8.0 * values[2] - values[3]) / (12.0 * eps)
    return grad


def _require_float64(arr: np.ndarray, what: str) -> None:
    if arr.dtype != np.float64:
        raise TypeError(
            f"gradient checks need float64 ({what} is {arr.dtype}): round-off in float32 "
            "swamps central differences; use model.to(np.float64) and x.astype(np.float64)"
        )


def gradcheck(
    module: Module,
    x: np.ndarray,
    *,
    dout: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    eps: float = DEFAULT_EPS,
    before_forward: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Compare ``module.backward`` with central differences.

    Parameters
    ----------
    module : Module
        A float64 module. Its mode (train/eval) is used as it is.
    x : ndarray
        float64 input. It is copied, never modified.
    dout : ndarray, optional
        Upstream gradient; random standard normal from ``rng`` if omitted.
    rng : numpy.random.Generator, optional
        Source of ``dout`` (default seed 0).
    eps : float
        Central-difference step.
    before_forward : callable, optional
        Called before every forward pass; stochastic modules use it to replay
        the same random numbers (e.g. reset a dropout generator).

    Returns
    -------
    dict
        ``{"input": err, "<param name>": err, ...}``: the maximum relative error
        of each gradient.
    """
    _require_float64(x, "the input")
    for name, param in module.named_parameters():
        _require_float64(param.data, f"parameter {name!r}")
    x = np.array(x, dtype=np.float64, copy=True)
    generator = rng if rng is not None else np.random.default_rng(0)
    prepare = before_forward or (lambda: None)

    prepare()
    out = module.forward(x.copy())
    if dout is None:
        dout = generator.standard_normal(out.shape)
    elif dout.shape != out.shape:
        raise ValueError(f"dout has shape {dout.shape}, the module's output has {out.shape}")
    module.zero_grad()
    dx = module.backward(dout.copy())
    analytic = {"input": np.array(dx, dtype=np.float64)}
    analytic.update({name: p.grad.copy() for name, p in module.named_parameters()})

    def f() -> float:
        prepare()
        return float(np.sum(module.forward(x) * dout))

    errors = {"input": relative_error(analytic["input"], numeric_gradient(f, x, eps))}
    for name, param in module.named_parameters():
        errors[name] = relative_error(analytic[name], numeric_gradient(f, param.data, eps))
    return errors


def gradcheck_loss(
    loss: Loss,
    input: np.ndarray,
    target: np.ndarray,
    *,
    eps: float = DEFAULT_EPS,
) -> dict[str, float]:
    """Compare ``loss.backward()`` with central differences of ``loss(input, target)``.

    Returns ``{"input": err}``, the maximum relative error of the gradient with
    respect to the scores.
    """
    _require_float64(input, "the input")
    x = np.array(input, dtype=np.float64, copy=True)
    loss.forward(x.copy(), target)
    analytic = np.array(loss.backward(), dtype=np.float64)

    def f() -> float:
        return float(loss.forward(x, target))

    return {"input": relative_error(analytic, numeric_gradient(f, x, eps))}
