"""One forward and one backward pass of a model, layer by layer: ``handgrad explain``.

:func:`explain` runs a copy of the model on a batch, one module at a time as
the user wrote them (a ``Sequential`` is opened up; its fused convolution and
pooling is not used, so each layer shows its own formula), computes the loss,
and runs backward in reverse. It returns a :class:`Trace`: one
:class:`LayerRecord` per module with the formulas of :mod:`handgrad.formulas`,
the arrays that flowed through it, their statistics, and, for each parameter,
the relative error between its gradient and central differences.

The numeric check runs on a float64 copy of the model (round-off in float32
swamps central differences). A parameter with more than ``entries`` elements is
checked on a random subset of them, drawn from ``numpy.random.default_rng(seed)``:
perturbing one entry costs four forward passes (from the layer that owns it on).
Random modules (dropout) replay the same random numbers in every pass.

>>> import numpy as np
>>> from handgrad import nn
>>> from handgrad.explain import explain
>>> model = nn.Sequential(nn.Linear(4, 3, rng=0, dtype=np.float64), nn.ReLU())
>>> x = np.random.default_rng(1).standard_normal((5, 4))
>>> trace = explain(model, x, np.array([0, 1, 2, 0, 1]))
>>> [layer.output_shape for layer in trace.layers]
[(5, 3), (5, 3)]
>>> trace.max_rel_error < 1e-6
True
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handgrad._explain_check import (
    THRESHOLD,
    Check,
    generators,
    leaves,
    numeric_check,
    run_pass,
)
from handgrad.formulas import Description, describe, describe_loss
from handgrad.nn.activations import ReLU, Sigmoid, Tanh
from handgrad.nn.layers import Linear
from handgrad.nn.loss import Loss
from handgrad.nn.losses import CrossEntropyLoss
from handgrad.nn.module import Module, Sequential

__all__ = [
    "DEFAULT_ENTRIES",
    "THRESHOLD",
    "LayerRecord",
    "LossRecord",
    "ParamRecord",
    "Stats",
    "Trace",
    "explain",
    "leaves",
    "tiny_example",
]

DEFAULT_ENTRIES = 20
#: The central-difference step (``handgrad.gradcheck``'s): a larger step meets
#: more kinks, a smaller one more round-off.
DEFAULT_EPS = 1e-4
#: Relative errors below this are round-off: printed as "< 1e-8", not as digits
#: that change with the BLAS library's summation order.
ROUND_OFF = 1e-8
#: A sigmoid output within this of 0 or 1 (a tanh output within it of -1 or 1)
#: counts as saturated: its slope is below 0.01 (0.02 for tanh).
SATURATION = 0.01
#: The arrays are printed in full (``values``) when every one is a matrix of at
#: most this many elements, in rows of at most ``SMALL_ROW``: they fit 80 columns.
SMALL = 36
SMALL_ROW = 8


# -- records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Mean, standard deviation and largest magnitude of an array (computed in float64)."""

    mean: float
    std: float
    max_abs: float

    @classmethod
    def of(cls, a: np.ndarray) -> Stats:
        a64 = np.asarray(a, dtype=np.float64)
        if a64.size == 0:
            return cls(0.0, 0.0, 0.0)
        return cls(float(a64.mean()), float(a64.std()), float(np.abs(a64).max()))


@dataclass(frozen=True, eq=False)
class ParamRecord:
    """A parameter's gradient and how it compares with central differences.

    ``rel_error`` is the maximum relative error over the ``checked`` entries
    compared (``None`` when none were: the check was skipped, or every sampled
    entry sat at a kink); ``kinks`` entries were left out because a kink lay
    within the central-difference stencil; ``checked + kinks < size`` means a
    random sample of the entries.
    """

    name: str
    symbol: str
    value: np.ndarray = field(repr=False)
    grad: np.ndarray = field(repr=False)
    grad_stats: Stats
    rel_error: float | None
    checked: int
    kinks: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def size(self) -> int:
        return int(self.value.size)


@dataclass(frozen=True, eq=False)
class LayerRecord:
    """One module's forward and backward: formulas, arrays, statistics, parameters.

    ``x`` is the module's input, ``out`` its output, ``dout`` the gradient of the
    loss with respect to ``out`` and ``dx`` with respect to ``x``. For a ReLU,
    ``zero_fraction`` is the share of outputs that are 0 and ``dead_units`` how
    many units (axis 1: features or channels) are 0 for every sample; for a
    sigmoid or tanh, ``saturated_fraction`` is the share of saturated outputs.
    """

    name: str
    module: Module = field(repr=False)
    description: Description
    x: np.ndarray = field(repr=False)
    out: np.ndarray = field(repr=False)
    dout: np.ndarray = field(repr=False)
    dx: np.ndarray = field(repr=False)
    out_stats: Stats
    dx_stats: Stats
    params: tuple[ParamRecord, ...]
    zero_fraction: float | None = None
    dead_units: int | None = None
    units: int | None = None
    saturated_fraction: float | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.out.shape)


@dataclass(frozen=True, eq=False)
class LossRecord:
    """The loss: its formula, value, and the gradient ``dz`` it sends back to the scores."""

    loss: Loss = field(repr=False)
    description: Description
    value: float
    z: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    dz: np.ndarray = field(repr=False)
    dz_stats: Stats


@dataclass(frozen=True, eq=False)
class Trace:
    """What :func:`explain` found: the layers in forward order and the loss.

    ``str(trace)`` (or :meth:`format`) is the text ``handgrad explain`` prints;
    :meth:`plot` draws histograms of every layer's activations and gradients.
    """

    layers: tuple[LayerRecord, ...]
    loss: LossRecord
    dtype: np.dtype
    training: bool
    entries: int | None
    seed: int
    eps: float
    checked: bool

    @property
    def params(self) -> list[ParamRecord]:
        """Every parameter record, in forward order."""
        return [p for layer in self.layers for p in layer.params]

    @property
    def max_rel_error(self) -> float:
        """The largest relative error of any checked parameter gradient (0 if none)."""
        errors = [p.rel_error for p in self.params if p.rel_error is not None]
        if any(np.isnan(e) for e in errors):  # NaN weights: no check passes
            return float("nan")
        return max(errors, default=0.0)

    def passed(self, threshold: float = THRESHOLD) -> bool:
        """Whether every checked parameter gradient is within ``threshold``."""
        return self.checked and self.max_rel_error < threshold

    def format(
        self,
        width: int = 80,
        values: bool | None = None,
        title: str | None = None,
        about: Sequence[tuple[str, str]] = (),
    ) -> str:
        """The trace as text no wider than ``width``.

        ``values`` prints the arrays themselves instead of their statistics
        (default: when every array is a small matrix, as in :func:`tiny_example`;
        larger ones make lines wider than ``width``);
        ``title`` and ``about`` (``(label, text)`` lines) head the text.
        """
        from handgrad._explain_text import render

        if values is None:
            values = all(
                a.size <= SMALL and a.ndim <= 2 and (a.ndim == 0 or a.shape[-1] <= SMALL_ROW)
                for layer in self.layers
                for a in (layer.x, layer.out, *(p.value for p in layer.params))
            )
        return render(self, width, values, title, about)

    def __str__(self) -> str:
        return self.format()

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Histograms of each layer's output and of the gradient flowing into it (PNG)."""
        from handgrad._explain_text import plot_trace

        return plot_trace(self, path)


# -- explain ---------------------------------------------------------------------------


def _activity(module: Module, out: np.ndarray) -> dict[str, Any]:
    """Dead ReLUs and saturated sigmoid/tanh units, for the layer record."""
    if type(module) is ReLU:
        zero = out == 0
        found: dict[str, Any] = {"zero_fraction": float(zero.mean()) if zero.size else 0.0}
        if out.ndim >= 2:
            other = tuple(a for a in range(out.ndim) if a != 1)
            found["dead_units"] = int(np.all(zero, axis=other).sum())
            found["units"] = int(out.shape[1])
        return found
    if type(module) is Sigmoid:
        saturated = (out < SATURATION) | (out > 1 - SATURATION)
        return {"saturated_fraction": float(saturated.mean()) if out.size else 0.0}
    if type(module) is Tanh:
        saturated = np.abs(out) > 1 - SATURATION
        return {"saturated_fraction": float(saturated.mean()) if out.size else 0.0}
    return {}


def explain(
    model: Module,
    x: np.ndarray,
    y: np.ndarray,
    loss: Loss | None = None,
    *,
    entries: int | None = DEFAULT_ENTRIES,
    seed: int = 0,
    eps: float = DEFAULT_EPS,
    check: bool = True,
) -> Trace:
    """Run one forward and one backward pass of ``model`` on ``(x, y)``, layer by layer.

    The model itself is not changed: the passes run on copies, in the model's
    current mode (``model.train()`` for what a training step does).

    Parameters
    ----------
    model : Module
        A ``Sequential`` (opened up into its modules, recursively) or any module.
    x : ndarray
        A batch the model takes, in the model's dtype.
    y : ndarray
        Targets for ``loss``.
    loss : Loss, optional
        Default ``CrossEntropyLoss()``.
    entries : int or None
        Entries of each parameter compared with central differences (a random
        sample when the parameter has more); None compares every entry.
    seed : int
        Seed of the generator that samples the entries.
    eps : float
        Central-difference step.
    check : bool
        Run the numeric check (False: only the passes and their statistics).

    Returns
    -------
    Trace
    """
    if entries is not None and entries < 1:
        raise ValueError(f"entries must be a positive int or None, got {entries!r}")
    if not isinstance(model, Module):
        raise TypeError(f"explain needs a handgrad Module as model, got {type(model).__name__}")
    if isinstance(loss, type):
        raise TypeError(f"explain needs a loss object, got the class {loss.__name__}: pass "
                        f"{loss.__name__}()")  # fmt: skip
    if loss is not None and not isinstance(loss, Loss):
        raise TypeError(f"explain needs a handgrad Loss as loss, got {type(loss).__name__}")
    loss = CrossEntropyLoss() if loss is None else loss
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or len(x) == 0 or y.ndim == 0 or len(y) != len(x):
        raise ValueError(
            f"explain needs a non-empty batch with one target per sample, got x of shape "
            f"{x.shape} and y of shape {y.shape}"
        )
    work, work_loss = copy.deepcopy((model, loss))
    work.zero_grad()
    named = list(leaves(work))
    steps = [m for _, m in named]
    originals = [m for _, m in leaves(model)]
    run = run_pass(steps, work_loss, x, y, generators(work))
    errors = numeric_check(model, loss, x, y, entries, seed, eps) if check else {}
    full_names = {id(p): name for name, p in work.named_parameters()}
    seen: set[int] = set()
    layers = []
    for i, (path, module) in enumerate(named):
        description = describe(module, run.xs[i], run.outs[i])
        symbols = {s.param: s.lhs for s in description.backward if s.param}
        params = []
        for attr, p in module.named_parameters():
            if id(p) in seen:
                continue  # shared with an earlier layer: reported there
            seen.add(id(p))
            name = full_names[id(p)]
            found = errors.get(name, Check(None, 0, 0))
            params.append(
                ParamRecord(
                    name=name,
                    symbol=symbols.get(attr, f"d{attr}"),
                    value=p.data.copy(),
                    grad=p.grad.copy(),
                    grad_stats=Stats.of(p.grad),
                    rel_error=found.rel_error,
                    checked=found.checked,
                    kinks=found.kinks,
                )
            )
        layers.append(
            LayerRecord(
                name=path,
                module=originals[i],
                description=description,
                x=run.xs[i],
                out=run.outs[i],
                dout=run.douts[i],
                dx=run.dxs[i],
                out_stats=Stats.of(run.outs[i]),
                dx_stats=Stats.of(run.dxs[i]),
                params=tuple(params),
                **_activity(module, run.outs[i]),
            )
        )
    loss_record = LossRecord(
        loss=loss,
        description=describe_loss(work_loss, run.z, y),
        value=run.value,
        z=run.z,
        y=y,
        dz=run.dz,
        dz_stats=Stats.of(run.dz),
    )
    params_dtype = next((p.dtype for p in model.parameters()), x.dtype)
    return Trace(
        layers=tuple(layers),
        loss=loss_record,
        dtype=np.dtype(params_dtype),
        training=model.training,
        entries=entries,
        seed=seed,
        eps=eps,
        checked=check,
    )


# -- the --tiny example ------------------------------------------------------------------


def tiny_example(seed: int = 0) -> tuple[Sequential, np.ndarray, np.ndarray]:
    """A 2-3-2 ReLU network and a batch of two samples, small enough to redo by hand.

    Weights, biases and inputs have one decimal (float64, drawn from
    ``default_rng(seed)``), so every pre-activation has at most two. The draw is
    repeated until every hidden pre-activation is at least 0.1 away from ReLU's
    kink at 0 (where central differences are wrong) and some are negative (so
    the ReLU's mask shows). Returns ``(model, x, y)`` with labels ``y = [0, 1]``.
    """
    rng = np.random.default_rng(seed)

    def tenths(*shape: int, nonzero: bool = False) -> np.ndarray:
        v = rng.integers(1 if nonzero else 0, 10, size=shape) * rng.choice([-1, 1], size=shape)
        return v / 10.0

    for _ in range(1000):
        w1, b1 = tenths(3, 2, nonzero=True), tenths(3)
        w2, b2 = tenths(2, 3, nonzero=True), tenths(2)
        x = tenths(2, 2, nonzero=True) * 2  # inputs up to 1.8
        z1 = x @ w1.T + b1
        if np.abs(z1).min() >= 0.1 and (z1 < 0).any() and (z1 > 0).sum() >= 2:
            break
    else:  # pragma: no cover - 1000 draws always find one
        raise RuntimeError("no tiny example found")
    model = Sequential(
        Linear(2, 3, rng=rng, dtype=np.float64), ReLU(), Linear(3, 2, rng=rng, dtype=np.float64)
    )
    for layer, w, b in ((model[0], w1, b1), (model[2], w2, b2)):
        assert isinstance(layer, Linear) and layer.bias is not None
        layer.weight.data[...] = w
        layer.bias.data[...] = b
    return model, x, np.array([0, 1])
