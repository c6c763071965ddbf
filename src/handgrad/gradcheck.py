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

:func:`gradcheck` and :func:`gradcheck_loss` return a :class:`GradcheckResult`:
the error of each gradient, the tolerance it was judged against (``1e-6`` by
default) and the verdict; ``raise_on_fail=True`` (or ``result.raise_if_failed()``)
turns a failure into a :class:`GradcheckError` naming the gradients that failed.

>>> import numpy as np
>>> from handgrad import gradcheck, nn
>>> layer = nn.Linear(3, 2, rng=0, dtype=np.float64)
>>> result = gradcheck(layer, np.random.default_rng(1).standard_normal((4, 3)))
>>> result.passed, sorted(result)
(True, ['bias', 'input', 'weight'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from handgrad.nn.loss import Loss
from handgrad.nn.module import Module

DEFAULT_EPS = 1e-4
DEFAULT_TOLERANCE = 1e-6


class GradcheckError(AssertionError):
    """A gradient check failed: an analytic gradient disagrees with the numeric one."""


@dataclass(frozen=True)
class GradcheckResult(Mapping[str, float]):
    """The outcome of a gradient check: a read-only mapping ``{gradient name: error}``.

    ``"input"`` is the gradient returned by ``backward``; the other keys are the
    parameter names of ``named_parameters()`` (``"weight"``, ``"0.bias"``...).

    Attributes
    ----------
    errors : dict
        Maximum relative error of each gradient (see the module docstring).
    tolerance : float
        A gradient passes when its error is below this.
    what : str
        What was checked (the module's or loss's class name), for messages.
    """

    errors: dict[str, float]
    tolerance: float = DEFAULT_TOLERANCE
    what: str = field(default="gradient check")

    def __getitem__(self, name: str) -> float:
        return self.errors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.errors)

    def __len__(self) -> int:
        return len(self.errors)

    @property
    def failures(self) -> dict[str, float]:
        """The gradients whose error is not below the tolerance (NaN fails)."""
        return {k: e for k, e in self.errors.items() if not e < self.tolerance}

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def worst(self) -> tuple[str, float]:
        """The name and error of the worst gradient (NaN counts as worst)."""
        return max(self.errors.items(), key=lambda kv: np.inf if np.isnan(kv[1]) else kv[1])

    def __bool__(self) -> bool:
        return self.passed

    def raise_if_failed(self) -> GradcheckResult:
        """Raise :class:`GradcheckError` naming every failing gradient; else return self."""
        if not self.passed:
            bad = ", ".join(f"{k} {e:.2e}" for k, e in self.failures.items())
            raise GradcheckError(
                f"{self.what}: gradient check failed (relative error >= {self.tolerance:g}): "
                f"{bad}; backward disagrees with central differences of forward"
            )
        return self

    def __str__(self) -> str:
        width = max((len(k) for k in self.errors), default=0)
        lines = [
            f"{self.what}: {'passed' if self.passed else 'FAILED'} (tolerance {self.tolerance:g})"
        ]
        for name, error in self.errors.items():
            mark = "ok" if error < self.tolerance else "FAIL"
            lines.append(f"  {name:<{width}}  {error:9.2e}  {mark}")
        return "\n".join(lines)


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
    tol: float = DEFAULT_TOLERANCE,
    raise_on_fail: bool = False,
) -> GradcheckResult:
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
    tol : float
        Tolerance of the verdict: each gradient's relative error must be below it.
    raise_on_fail : bool
        Raise :class:`GradcheckError` instead of returning a failed result.

    Returns
    -------
    GradcheckResult
        ``{"input": err, "<param name>": err, ...}``, the maximum relative error
        of each gradient, with ``.passed``, ``.failures`` and ``.worst``.
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
    return _verdict(GradcheckResult(errors, tol, type(module).__name__), raise_on_fail)


def _verdict(result: GradcheckResult, raise_on_fail: bool) -> GradcheckResult:
    return result.raise_if_failed() if raise_on_fail else result


def gradcheck_loss(
    loss: Loss,
    input: np.ndarray,
    target: np.ndarray,
    *,
    eps: float = DEFAULT_EPS,
    tol: float = DEFAULT_TOLERANCE,
    raise_on_fail: bool = False,
) -> GradcheckResult:
    """Compare ``loss.backward()`` with central differences of ``loss(input, target)``.

    Returns a :class:`GradcheckResult` with one entry, ``"input"``: the maximum
    relative error of the gradient with respect to the scores. ``tol`` and
    ``raise_on_fail`` as in :func:`gradcheck`.
    """
    _require_float64(input, "the input")
    x = np.array(input, dtype=np.float64, copy=True)
    loss.forward(x.copy(), target)
    analytic = np.array(loss.backward(), dtype=np.float64)

    def f() -> float:
        return float(loss.forward(x, target))

    errors = {"input": relative_error(analytic, numeric_gradient(f, x, eps))}
    return _verdict(GradcheckResult(errors, tol, type(loss).__name__), raise_on_fail)
