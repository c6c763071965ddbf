"""The checker's step probes: what one ``train_step`` does to each parameter, against the
numeric gradient of the learner's own forward pass and cross-entropy.

The learner's gradients are not visible, only the update they make, and the update
rule is theirs. From a fresh instance, the first step of plain SGD or momentum is
``-lr * g``, and that of Adam (RMSProp, Adagrad) is ``-lr * g / (|g| + eps)``, the
sign of ``g``. :func:`handgrad.lab._diagnose.step_fit` compares a step with both;
the direction of ``g`` is what every rule shows. Its scale shows only under the
first kind, by the batch-doubling test: the same batch given twice has the same
mean gradient, so the step must not change.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import numpy as np

from handgrad.lab import _diagnose as D
from handgrad.lab._contract import PARAMETERS
from handgrad.lab.findings import Finding, bug, note, ok

LOG10 = float(np.log(10.0))
#: For each ReLU slip (keys of :data:`handgrad.lab._diagnose.RELU_VARIANTS`): what it
#: is, and the fix.
_RELU = {
    "missing": ("the ReLU derivative is left out, dH = dA", "dH = dA * (H > 0)"),
    "output": (
        "dA is multiplied by the ReLU's output A, not by its derivative",
        "the derivative of max(H, 0) is 1 where H > 0, else 0: dH = dA * (H > 0)",
    ),
    "inverted": (
        "the ReLU derivative is inverted, dH = dA * (H <= 0)",
        "the gradient flows where the unit was active: dH = dA * (H > 0)",
    ),
}


def loss_findings(loss: Any, before: float, after: float, n: int) -> Iterator[Finding]:
    """The loss ``train_step`` returned, against the cross-entropy of forward's probabilities."""
    if np.ndim(loss) != 0 or isinstance(loss, (str, bytes)) or loss is None:
        what = "None" if loss is None else f"{type(loss).__name__} {np.shape(loss)}"
        text = f"train_step returned {what}, expected the loss as a number"
        yield bug("loss", "loss", text, "return -np.mean(np.log(P[np.arange(N), y]))")
        return
    value = float(loss)
    if abs(value - before) <= 1e-3 * max(1.0, before):
        yield ok("loss", f"{value:.4f}, the mean cross-entropy of forward's probabilities")
        return
    why, fix = "", "return -np.mean(np.log(P[np.arange(N), y])), before the update"
    if abs(value - n * before) <= 1e-3 * n * before:
        why, fix = f": {n} times too large, a sum over the batch", "average over the batch"
    elif abs(value + before) <= 1e-3 * before:
        why, fix = ": the sign is flipped", "the cross-entropy is -log P[y], a positive number"
    elif abs(value - before / LOG10) <= 1e-3 * before:
        why, fix = ": log10 instead of the natural log", "use np.log"
    elif abs(value - after) <= 1e-3 * max(1.0, after):
        why = ": it is the loss after the update"
    text = f"train_step returned {value:.4g}; the mean cross-entropy is {before:.4g}{why}"
    yield bug("loss", "loss", text, fix)


def _step(session: Any, times: int) -> tuple[Any, dict[str, np.ndarray], Any]:
    """``(model, {name: value before}, loss)`` after one train_step on the batch x ``times``."""
    model = session.fresh()
    before = {k: np.array(getattr(model, k), copy=True) for k in PARAMETERS}
    loss = session.call("train_step", model, session.X(times), session.y(times))
    return model, before, loss


def _numeric(session: Any, entries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Central differences of the cross-entropy of the learner's forward at ``entries``."""
    model = session.fresh()
    h = 1e-5 if all(getattr(model, k).dtype == np.float64 for k in PARAMETERS) else 1e-2
    h = min(h, session.probe.margin / 2)  # never across a ReLU kink
    X, y = session.probe.X, session.probe.y
    out = {}
    for name, flat in entries.items():
        a = getattr(model, name)
        grads = []
        for k in flat:
            index = _learner_index(name, int(k), a.shape)
            old = a[index].copy()
            a[index] = old + h
            up, hi = D.cross_entropy(session.call("forward", model, X.copy()), y), a[index]
            a[index] = old - h
            down, lo = D.cross_entropy(session.call("forward", model, X.copy()), y), a[index]
            a[index] = old
            grads.append((up - down) / (float(hi) - float(lo)))
        out[name] = np.array(grads)
    return out


def _learner_index(name: str, k: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The learner's index of canonical flat entry ``k`` of parameter ``name``."""
    if name in ("W1", "W2"):
        i, j = divmod(k, 128 if name == "W1" else 10)
        return (i, j) if shape == ((784, 128) if name == "W1" else (128, 10)) else (j, i)
    return tuple(int(i) for i in np.unravel_index(k, shape))


def step_findings(session: Any, probs: np.ndarray | None) -> Generator[Finding, None, None]:
    """Loss, updates, gradients and batch averaging, from single steps on fresh instances."""
    n = len(session.probe.y)
    model, before, loss = _step(session, 1)
    if probs is not None:
        after = D.cross_entropy(session.call("forward", model, session.X()), session.probe.y)
        yield from loss_findings(loss, D.cross_entropy(probs, session.probe.y), after, n)
    steps: dict[str, np.ndarray] = {}
    for name in PARAMETERS:
        now = np.asarray(getattr(model, name))
        if now.shape != before[name].shape:
            text = f"train_step changed {name}'s shape from {before[name].shape} to {now.shape}"
            fix = f"d{name} must have {name}'s shape: sum over the batch, axis 0, for a bias"
            yield bug("update", "bias-axis" if name[0] == "b" else "shape", text, fix)
        elif not np.all(np.isfinite(now)):
            fix = "look for a division by zero or a log of 0 in backward, or a huge step"
            yield bug("update", "nonfinite", f"train_step made {name} NaN/inf", fix)
        else:
            steps[name] = D.to_canonical(name, now) - D.to_canonical(name, before[name])
    still = [k for k, s in steps.items() if not np.any(s)]
    if still:
        text = f"train_step leaves {', '.join(still)} unchanged"
        fix = "update each in place, e.g. self.b1 -= self.lr * db1"
        if "b2" in still:  # the other way to leave b2 alone
            fix += "; and sum db2 over axis 0: over every axis, dZ = P - Y sums to 0"
        yield bug("update", "never-updated", text, fix)
    moved = {k: s for k, s in steps.items() if np.any(s)}
    if probs is None or not moved:
        return
    rules = yield from _directions(session, moved)
    if rules:
        yield from _batch_mean(session, moved, rules)


def _directions(
    session: Any, steps: dict[str, np.ndarray]
) -> Generator[Finding, None, dict[str, str]]:
    """Each step against the right gradient and the classic bugs'; returns the update rules."""
    probe = session.probe
    entries = D.numeric_entries(probe.params)
    numeric = _numeric(session, entries)
    learner = session.fresh()
    params = {k: D.to_canonical(k, getattr(learner, k)) for k in PARAMETERS}
    candidates = D.candidate_gradients(params, probe.X, probe.y)
    right = candidates["right"]
    flat = np.concatenate([right[k].ravel()[entries[k]] for k in PARAMETERS])
    error = D.relative_error(np.concatenate([numeric[k] for k in PARAMETERS]), flat)
    tolerance = 1e-6 if all(getattr(learner, k).dtype == np.float64 for k in PARAMETERS) else 1e-2
    exact = session.matches and error < tolerance
    count = sum(len(e) for e in entries.values())
    if exact:
        yield ok(
            "numeric check",
            f"central differences of your forward and cross-entropy at {count} entries agree "
            f"with the lab's gradient (relative error {error:.1g})",
        )
    else:
        if session.matches:  # the same probabilities, yet another gradient: say so
            yield note(
                "numeric check",
                f"central differences of your forward at {count} entries differ from the "
                f"lab's gradient (relative error {error:.1g}): the steps are compared with them",
            )
        # only the sampled entries are known: compare the steps there
        right = numeric
        steps = {k: s.ravel()[entries[k]] for k, s in steps.items()}
        params = {k: p.ravel()[entries[k]] for k, p in params.items()}
        candidates = {"right": numeric}
    rules: dict[str, str] = {}
    named: dict[str, list[tuple[str, float, float]]] = {}  # bug: [(param, right, bug's)]
    good: list[str] = []
    rates: dict[str, float] = {}
    for name, step in steps.items():
        fit, rules[name] = D.step_fit(step, right[name])
        if fit >= D.AGREE:
            good.append(f"d{name} {fit:.4f}")
            if rules[name] == "linear":  # step = -rate * gradient
                g = right[name].ravel()
                rates[name] = float(-(step.ravel() @ g) / (g @ g))
            continue
        if D.step_fit(-step, right[name])[0] >= D.AGREE:
            text = f"the step on {name} goes up the gradient, not down"
            yield bug("gradients", "uphill", text, f"subtract it: {name} -= lr * d{name}")
            continue
        fits = {k: D.step_fit(step, c[name]) for k, c in candidates.items() if name in c}
        best = max(fits, key=lambda k: fits[k][0])
        if fits[best][0] >= D.AGREE:
            rules[name] = fits[best][1]
            named.setdefault(best, []).append((name, fit, fits[best][0]))
            continue
        decay = _weight_decay(step, right[name], params[name])
        if decay is not None:
            rules[name] = "linear"
            text = (
                f"the step on {name} is -lr * (d{name} + {decay:.2g} * {name}): weight decay "
                f"(L2), not a bug; d{name} itself follows the gradient"
            )
            yield note("update rule", text)
            continue
        text = (
            f"d{name} disagrees with the numeric gradient of your forward "
            f"(cosine {fit:.2f}), and is none of the classic bugs"
        )
        fix = "check each line of backward against its formula and shape"
        yield bug("gradients", "gradient", text, fix)
    for key, found in named.items():
        names = ", ".join(f"d{name}" for name, _, _ in found)
        match = f": the steps match that at cosine {found[0][2]:.4f}, the gradient of your "
        match += "forward at " + ", ".join(f"{right_fit:.2f}" for _, right_fit, _ in found)
        if key.startswith("relu: "):
            what, fix = _RELU[key[len("relu: ") :]]
            yield bug("gradients", "relu-derivative", f"{names}: {what}{match}", fix)
        else:
            b = key.split(":")[0]
            text = f"{names}: summed over every axis, one number for all units{match}"
            yield bug("gradients", "bias-axis", text, f"d{b} = dout.sum(axis=0): the batch only")
    if good:
        yield ok("gradients", "steps follow the gradient: cosine " + ", ".join(good))
    typical = float(np.median(list(rates.values()))) if rates else 0.0
    odd = {k: r / typical for k, r in rates.items() if not 1 / 1.5 < r / typical < 1.5}
    if odd:
        others = ", ".join(k for k in rates if k not in odd)
        text = "for the size of its gradient, the step on " + ", ".join(
            f"{k} is {ratio:.3g}x" for k, ratio in odd.items()
        )
        if others:
            text += f" that on {others}: a gradient scaled by mistake"
        else:  # every step is off the median: no parameter to compare with by name
            text += f" the median of {', '.join(rates)}: a gradient scaled by mistake"
        fix = "every gradient comes from the same loss: look for a factor (N, 255) only it gets"
        yield bug("gradients", "scale", text, fix)
    return rules


def _weight_decay(step: np.ndarray, grad: np.ndarray, weights: np.ndarray) -> float | None:
    """``lambda`` when the step is ``-lr * (grad + lambda * weights)`` (SGD with L2 or
    weight decay), to the agreement the check asks of any step; None otherwise."""
    basis = np.stack([-grad.ravel(), -weights.ravel()], axis=1).astype(np.float64)
    target = step.ravel().astype(np.float64)
    if not np.any(basis[:, 1]):
        return None
    (lr, lr_decay), *_ = np.linalg.lstsq(basis, target, rcond=None)
    fitted = basis @ np.array([lr, lr_decay])
    denominator = np.linalg.norm(fitted) * np.linalg.norm(target)
    if lr <= 0 or lr_decay <= 0 or denominator == 0:
        return None
    return float(lr_decay / lr) if fitted @ target / denominator >= D.AGREE else None


def _batch_mean(
    session: Any, steps: dict[str, np.ndarray], rules: dict[str, str]
) -> Iterator[Finding]:
    """The same batch twice: an averaged gradient is the same, a summed one doubles."""
    if all(rule == "sign" for rule in rules.values()):
        yield note(
            "update rule",
            "the first step follows the gradient's sign (Adam-like): its size does not "
            "show whether gradients are averaged over the batch",
        )
        return
    yield note("update rule", "the first step is proportional to the gradient (SGD or momentum)")
    model, before, _ = _step(session, 2)
    ratios = {}
    for name, step in steps.items():
        if rules.get(name) != "linear" or not np.any(step):
            continue
        twice = D.to_canonical(name, getattr(model, name)) - D.to_canonical(name, before[name])
        ratios[name] = float(twice.ravel() @ step.ravel() / (step.ravel() @ step.ravel()))
    summed = [f"d{k} x{r:.2f}" for k, r in ratios.items() if r > 1.5]
    twice = [f"d{k} x{r:.2f}" for k, r in ratios.items() if r < 0.75]
    if summed:
        text = "doubling the batch doubles the step (" + ", ".join(summed) + "): "
        text += "the gradients are summed over the batch, not averaged"
        yield bug("batch mean", "not-averaged", text, "divide dZ = P - onehot(y) by N, once")
    if twice:
        text = "doubling the batch halves the step (" + ", ".join(twice) + "): "
        text += "the gradients are divided by N twice"
        fix = "divide by N once, in dZ; then dW = A^T dZ and db = dZ.sum(axis=0) with no mean"
        yield bug("batch mean", "averaged-twice", text, fix)
    if ratios and not summed and not twice:
        yield ok("batch mean", "doubling the batch leaves the step unchanged: averaged")
