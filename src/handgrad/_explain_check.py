"""The passes behind :func:`handgrad.explain.explain`: one forward and backward pass
module by module, and the numeric check of every parameter's gradient on a float64
copy, entry by sampled entry, with the entries at a kink left out."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from handgrad.gradcheck import numeric_gradient, relative_error
from handgrad.nn.loss import Loss
from handgrad.nn.module import Module, Sequential
from handgrad.nn.parameter import Parameter

#: The largest relative error that passes (float64, central differences).
THRESHOLD = 1e-6
#: An entry is at a kink when the loss's slopes within the stencil differ by this
#: share of the analytic-numeric disagreement or more (see ``_compare``).
KINK_BEND = 0.1
#: A parameter's gradient is zero up to round-off when its largest entry is below
#: this share of the model's largest gradient.
ZERO = 1e-10


def leaves(model: Module, prefix: str = "") -> Iterator[tuple[str, Module]]:
    """The modules a forward pass runs, in order, as ``(path, module)``: a plain
    ``Sequential`` is opened up (recursively); any other module is one step."""
    if isinstance(model, Sequential) and type(model).forward is Sequential.forward:
        for name, child in model._modules.items():
            yield from leaves(child, f"{prefix}.{name}" if prefix else name)
    else:
        yield prefix or type(model).__name__, model


def generators(model: Module) -> list[np.random.Generator]:
    """Every random generator the model's modules hold (dropout's masks)."""
    found: dict[int, np.random.Generator] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, np.random.Generator):
                found.setdefault(id(value), value)
    return list(found.values())


def _snapshot(gens: list[np.random.Generator]) -> list[Mapping[str, Any]]:
    return [g.bit_generator.state for g in gens]


def _restore(gens: list[np.random.Generator], states: list[Mapping[str, Any]]) -> None:
    for g, state in zip(gens, states, strict=True):
        g.bit_generator.state = state


@dataclass
class Pass:
    """Arrays of one forward and backward pass, one entry per leaf module."""

    xs: list[np.ndarray]
    outs: list[np.ndarray]
    douts: list[np.ndarray]
    dxs: list[np.ndarray]
    z: np.ndarray
    value: float
    dz: np.ndarray
    states: list[list[Mapping[str, Any]]]


def run_pass(
    steps: list[Module], loss: Loss, x: np.ndarray, y: np.ndarray, gens: list[np.random.Generator]
) -> Pass:
    xs, outs, states = [], [], []
    h = x
    for module in steps:
        states.append(_snapshot(gens))
        xs.append(np.array(h, copy=True))  # kept: a later module may reuse buffers
        h = module.forward(h)
        outs.append(np.array(h, copy=True))
    value = float(loss.forward(h, y))
    dz = np.array(loss.backward(), copy=True)
    douts: list[np.ndarray] = [dz] * len(steps)
    dxs: list[np.ndarray] = [dz] * len(steps)
    d = dz
    for i in reversed(range(len(steps))):
        douts[i] = np.array(d, copy=True)
        d = steps[i].backward(d)
        dxs[i] = np.array(d, copy=True)
    return Pass(xs, outs, douts, dxs, np.array(h, copy=True), value, dz, states)


def _sample(size: int, entries: int | None, rng: np.random.Generator) -> np.ndarray:
    if entries is None or size <= entries:
        return np.arange(size)
    return np.sort(rng.choice(size, size=entries, replace=False))


def numeric_check(
    model: Module,
    loss: Loss,
    x: np.ndarray,
    y: np.ndarray,
    entries: int | None,
    seed: int,
    eps: float,
) -> dict[str, Check]:
    """How each parameter's gradient compares with central differences, on a float64 copy."""
    model64, loss64 = copy.deepcopy((model, loss))
    model64.to(np.float64)
    model64.zero_grad()
    steps = [m for _, m in leaves(model64)]
    gens = generators(model64)
    x64 = np.array(x, dtype=np.float64) if np.issubdtype(x.dtype, np.floating) else x
    ref = run_pass(steps, loss64, x64, y, gens)
    first: dict[int, int] = {}  # the first step that uses each parameter
    for i, module in enumerate(steps):
        for p in module.parameters():
            first.setdefault(id(p), i)
    rng = np.random.default_rng(seed)
    context = _Context(steps, ref, loss64, y, gens, eps)
    grads = [np.abs(p.grad).max() for p in model64.parameters() if p.size]
    model_peak = float(max(grads, default=0.0))
    results: dict[str, Check] = {}
    for name, param in model64.named_parameters():
        if id(param) not in first:
            continue  # not used by the forward pass
        peak = float(np.abs(param.grad).max()) if param.size else 0.0
        # A gradient that is zero up to round-off (a bias right before batch
        # normalisation, whose mean cancels it) is measured against the model's
        # largest gradient: against its own, round-off would be compared with noise.
        scale = peak if peak > ZERO * model_peak else model_peak
        idx = _sample(param.size, entries, rng)
        results[name] = _check_param(context, param, first[id(param)], idx, scale)
    return results


@dataclass
class _Context:
    """What every perturbed pass needs: the modules, the reference pass, the loss."""

    steps: list[Module]
    ref: Pass
    loss: Loss
    y: np.ndarray
    gens: list[np.random.Generator]
    eps: float


def _check_param(c: _Context, param: Parameter, start: int, idx: np.ndarray, scale: float) -> Check:
    """Central differences of the loss for the entries ``idx`` of ``param``, running
    only the modules from ``start``, the first that uses it."""
    flat = param.data.reshape(-1)  # a view: Module.to made data C-contiguous
    original = flat[idx].copy()
    entries = original.copy()  # numeric_gradient perturbs these in place
    seen: dict[tuple[int, int], float] = {}  # (entry, step in units of eps) -> loss

    def f() -> float:
        flat[idx] = entries
        _restore(c.gens, c.ref.states[start])  # dropout replays its masks
        h = c.ref.xs[start]
        for module in c.steps[start:]:
            h = module.forward(h)
        value = float(c.loss.forward(h, c.y))
        moved = np.flatnonzero(entries != original)
        if len(moved) == 1:
            j = int(moved[0])
            offset = float(entries[j] - original[j]) / c.eps
            if np.isfinite(offset):  # a NaN or inf weight moves by NaN
                seen[j, round(offset)] = value
        return value

    numeric = numeric_gradient(f, entries, c.eps)
    flat[idx] = original
    return _compare(param.grad.reshape(-1)[idx], numeric, seen, c.eps, scale)


@dataclass(frozen=True)
class Check:
    """How one parameter's sampled entries compare with central differences."""

    rel_error: float | None  # over the entries away from kinks; None if there are none
    checked: int  # entries compared
    kinks: int  # entries left out: a kink within the central-difference stencil


def _compare(
    analytic: np.ndarray,
    numeric: np.ndarray,
    seen: dict[tuple[int, int], float],
    eps: float,
    scale: float,
) -> Check:
    """The relative error of each sampled entry, leaving out entries at a kink.

    The floor of :func:`relative_error` is relative to the largest gradient of the
    tensor, ``scale``; a sample may miss that entry, so it goes in as a pair that
    agrees with itself. An entry whose error is above :data:`THRESHOLD` is at a
    kink (a ReLU input crossing 0, a max-pool tie changing hands) when the loss
    bends within the stencil: its slopes over ``[-2h, -h]``, ``[-h, h]`` and
    ``[h, 2h]`` differ by a tenth of the disagreement or more. On a smooth stretch
    they differ by about ``3h f''``, tiny next to any real bug; across a kink, by
    its jump.
    """
    analytic = analytic.astype(np.float64)
    kept: list[float] = []
    kinks = 0
    for j in range(len(analytic)):
        pair = (np.array([analytic[j], scale]), np.array([numeric[j], scale]))
        error = relative_error(*pair)
        if error >= THRESHOLD and all((j, s) in seen for s in (-2, -1, 1, 2)):
            slopes = (
                (seen[j, -1] - seen[j, -2]) / eps,
                (seen[j, 1] - seen[j, -1]) / (2 * eps),
                (seen[j, 2] - seen[j, 1]) / eps,
            )
            if max(slopes) - min(slopes) >= KINK_BEND * abs(analytic[j] - numeric[j]):
                kinks += 1
                continue
        kept.append(error)
    return Check(max(kept) if kept else None, len(kept), kinks)
