"""The checker's child process: drives a learner's ``NeuralNetwork`` on a small batch.

Started by :mod:`handgrad.lab.checker` as ``python -m handgrad.lab._checkrunner
CONFIG_JSON``, under the grader's import rules and limits
(:mod:`handgrad.lab._sandbox`: NumPy and the standard library only, memory capped,
killed past the time limit) but not isolated: it runs as the caller. It reports
one JSON line per finding on its private pipe, then ``{"event": "done"}``.

Every probe starts from a fresh instance with a state the checker chose
(:func:`handgrad.lab._diagnose.make_probe`) written into the learner's own
arrays, so optimizer state is zero and one bug cannot hide another.
"""

from __future__ import annotations

import itertools
import json
import signal
import sys
import warnings
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

import numpy as np

from handgrad.lab import _diagnose as D
from handgrad.lab._contract import PARAMETERS, signature_problem, weights_problem
from handgrad.lab._gradients import step_findings
from handgrad.lab._isolate import start_reaper
from handgrad.lab._learner import Learner, OutOfTime, Stop
from handgrad.lab._sandbox import confine, emit, sandbox
from handgrad.lab.findings import Finding, bug, note, ok

T = TypeVar("T")


class Session:
    """One learner's class, and fresh instances of it set to the probe's state."""

    def __init__(self, learner: Learner, cls: type, probe: D.Probe) -> None:
        self.learner, self.cls, self.probe = learner, cls, probe
        self.matches = False  # does forward compute the lab's network? (set by _forward)

    def call(self, method: str, model: Any, *args: Any) -> Any:
        return self.learner.call(method, getattr(model, method), *args)

    def fresh(self) -> Any:
        """A new instance with the probe's weights written into its own arrays."""
        model = self.learner.call("__init__", self.cls)
        for name in PARAMETERS:
            a = getattr(model, name)
            a[...] = D.to_learner(name, self.probe.params[name], a.shape)
        return model

    def X(self, times: int = 1) -> np.ndarray:
        return np.concatenate([self.probe.X] * times)  # always a fresh copy

    def y(self, times: int = 1) -> np.ndarray:
        return np.concatenate([self.probe.y] * times)


def check_file(path: str, shown: str, blocker: Any, time_limit: float = 30.0) -> Iterator[Finding]:
    """Every finding about the file at ``path``, in the order the report shows them."""
    learner = Learner(path, shown, time_limit)
    try:
        cls = learner.load(blocker)
        newer = learner.newer_syntax()
        if newer:
            yield note("file", f"{newer}: Python 3.8, which the lab supports, cannot parse it")
        problem = signature_problem(cls)
        if problem:
            fix = "keep the contract's signatures: 'handgrad lab start' writes them"
            yield bug("contract", "contract", problem, fix)
            return
        model = learner.call("__init__", cls)
        problem = weights_problem(model)
        if problem:
            yield bug("contract", "contract", problem, "W1, b1, W2, b2 as in the docstring")
            return
    except Stop as stop:
        yield stop.finding
        return
    session = Session(learner, cls, D.make_probe())
    seen = set()  # a failing method fails every probe that calls it: say so once
    try:
        for finding in itertools.chain(_initialisation(session, model), _probes(session)):
            if finding.text not in seen:
                seen.add(finding.text)
                yield finding
    except Stop as stop:  # a final one: the time is up
        yield stop.finding


def _probes(session: Session) -> Iterator[Finding]:
    try:
        session.fresh()
    except Stop as stop:
        yield stop.finding
        return
    probs = yield from _run(_forward(session))
    if probs is not None:
        yield from _run(_softmax(session))
    yield from _run(_predict(session, probs))
    yield from _run(step_findings(session, probs))


def _run(probe: Generator[Finding, None, T]) -> Generator[Finding, None, T | None]:
    """The probe's findings; a failure in the learner's code ends it as a finding."""
    try:
        return (yield from probe)
    except Stop as stop:
        if stop.final:
            raise
        yield stop.finding
        return None


def _sig(x: float) -> str:
    """Three significant digits: 0.0505, 1.00, 19.8, 477."""
    return f"{x:#.3g}".rstrip(".")


def _initialisation(session: Session, model: Any) -> Iterator[Finding]:
    """The learner's own initial weights, against the He scale ``sqrt(2 / fan_in)``."""
    parts, problems = [], []
    for name in ("W1", "b1", "W2", "b2"):
        value = np.asarray(getattr(model, name), dtype=np.float64)
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        if bad:
            text = f"{name} holds NaN or inf after __init__ ({bad} of {value.size} entries)"
            fix = f"build {name} from finite numbers only: random weights, zero biases"
            problems.append(("init-not-finite", text, fix))
    for name, fan_in in (("W1", 784), ("W2", 128)):
        w = np.asarray(getattr(model, name), dtype=np.float64)
        rms = float(np.sqrt(np.mean(w * w)))
        he = float(np.sqrt(2.0 / fan_in))
        parts.append(f"{name} rms {_sig(rms)} (He: {_sig(he)})")
        divided = [c for c in (2, 1) if 0.8 <= rms * np.sqrt(c / fan_in) <= 1.25]
        if divided:
            text = (
                f"{name} rms {_sig(rms)} is 1 / sqrt({divided[0]}/{fan_in}): the scale factor "
                "divides the random numbers instead of multiplying them"
            )
            fix = f"{name} = rng.standard_normal(shape) * np.sqrt({divided[0]} / {fan_in})"
            problems.append(("init-divided", text, fix))
        elif rms > 4 * he or rms < he / 20:
            large = rms > 4 * he
            text = (
                f"{name} rms {_sig(rms)} is {_sig(rms / he)} times the He scale sqrt(2/{fan_in}) "
                f"= {_sig(he)}: far too "
            )
            if large:
                text += "large, the softmax saturates and the first steps are huge"
            else:
                text += "small, signals and gradients start near zero"
            fix = f"scale the random weights by np.sqrt(2 / {fan_in}) (He initialisation)"
            problems.append(("init-too-large" if large else "init-too-small", text, fix))
    try:
        probs = np.asarray(session.call("forward", model, session.X()), dtype=np.float64)
        first = f"first loss {_sig(D.cross_entropy(probs, session.probe.y))} (uniform guess: 2.30)"
    except Stop as stop:
        if stop.final:
            raise
        first = ""
    except (ValueError, TypeError, IndexError):  # not probabilities: forward's probe says so
        first = ""
    for i, (code, text, fix) in enumerate(problems):
        yield bug("initialisation", code, text + (f"; {first}" if first and i == 0 else ""), fix)
    if not problems:
        yield ok("initialisation", ", ".join(parts + [first] * bool(first)))


def _forward(session: Session) -> Generator[Finding, None, np.ndarray | None]:
    """``forward``'s output, and whether it is the lab's network."""
    n = len(session.probe.y)
    model = session.fresh()
    P = session.call("forward", model, session.X())
    if not isinstance(P, np.ndarray) or P.shape != (n, 10):
        shape = getattr(P, "shape", type(P).__name__)
        fix = "return P = softmax(Z) with one row per image: shape (N, 10)"
        yield bug("forward", "forward-shape", f"forward returned {shape}, expected ({n}, 10)", fix)
        return None
    if not np.all(np.isfinite(P)) or P.min() < -1e-6 or not np.allclose(P.sum(1), 1, atol=1e-3):
        text = "forward's rows are not probabilities (negative, NaN/inf, or not summing to 1)"
        yield bug("forward", "forward-values", text, "P = exp(Z - max Z) / sum exp(Z - max Z)")
        return None
    learner_params = {k: D.to_canonical(k, getattr(model, k)) for k in PARAMETERS}
    differs = float(np.abs(D.network(learner_params, session.probe.X)["P"] - P).max())
    session.matches = differs < 1e-4
    if session.matches:
        yield ok("forward", f"({n}, 10) probabilities: softmax(relu(X W1 + b1) W2 + b2)")
    else:
        yield note(
            "forward",
            f"({n}, 10) probabilities, but not softmax(relu(X W1 + b1) W2 + b2) (off by up to "
            f"{differs:.2g}): gradients are checked against your forward alone",
        )
    return P


def _softmax(session: Session) -> Generator[Finding, None, None]:
    """Logits in the thousands: a softmax that does not subtract the maximum overflows."""
    model = session.fresh()
    Z = D.network(session.probe.params, session.probe.X)["A"] @ session.probe.params["W2"]
    scale = 2000.0 / float(np.abs(Z + session.probe.params["b2"]).max())
    model.W2 *= scale
    model.b2 *= scale
    P = np.asarray(session.call("forward", model, session.X()), dtype=np.float64)
    if not np.all(np.isfinite(P)):
        text = "forward returns NaN/inf for logits of about +-2000: exp() overflows"
        fix = "subtract each row's maximum before exp(): softmax(Z) = softmax(Z - max Z)"
        yield bug("softmax", "softmax-overflow", text, fix)
    else:
        yield ok("softmax", "finite probabilities for logits of about +-2000")


def _predict(session: Session, probs: np.ndarray | None) -> Generator[Finding, None, None]:
    """``predict``'s labels: their shape, their type, and forward's argmax (when it works)."""
    n = len(session.probe.y)
    pred = np.asarray(session.call("predict", session.fresh(), session.X()))
    what = f"predict returned {pred.dtype} of shape {pred.shape}"
    if pred.shape == (n, 10):
        fix = "return the most probable class: probs.argmax(axis=1)"
    elif pred.shape == (10,):
        fix = "argmax over axis 1 (the classes), not axis 0 (the batch)"
    elif pred.size == n and pred.shape != (n,):
        fix = "return a flat array of shape (N,): no keepdims, or .ravel()"
    elif pred.shape != (n,):
        fix = "return one label per row of X"
    elif not np.issubdtype(pred.dtype, np.integer):
        fix = "return integer labels: argmax already gives int64, keep them as they are"
    else:
        wrong = 0 if probs is None else int(np.sum(pred != probs.argmax(axis=1)))
        if wrong:
            text = f"predict disagrees with forward's most probable class on {wrong} of {n} rows"
            yield bug("predict", "predict", text, "return forward(X).argmax(axis=1)")
        else:
            argmax = "" if probs is None else ": forward's argmax"
            yield ok("predict", f"{pred.dtype} labels of shape ({n},){argmax}")
        return
    yield bug("predict", "predict", f"{what}, expected integer labels of shape ({n},)", fix)


def _out_of_time(signum: int, frame: Any) -> None:
    raise OutOfTime


def main() -> None:
    cfg = json.loads(sys.argv[1])
    out = confine(cfg)
    start_reaper(None)  # lab check SIGKILLed: the file's processes die with it
    warnings.simplefilter("ignore")  # overflow warnings are what the probes look for
    np.seterr(all="ignore")
    shown = cfg.get("shown") or cfg["path"]
    # Our own clock, a little short of the parent's: the learner's loop then ends in an
    # exception that names its line, before the parent has to kill the process.
    limit = float(cfg["time_limit"])
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.setitimer(signal.ITIMER_REAL, max(limit - 1.0, 0.8 * limit))
    try:
        blocker = sandbox()
        for finding in check_file(cfg["path"], shown, blocker, limit):
            emit(out, event="finding", **finding.to_json())
    except MemoryError:
        text = f"{shown}: ran out of memory ({cfg['memory_mb']} MB)"
        emit(out, event="finding", **bug("file", "memory", text, "").to_json())
    except OutOfTime:  # between two calls into the learner's code
        text = f"{shown}: the check ran past its time limit of {limit:g} s"
        fix = "each method should take well under a second on 16 images"
        emit(out, event="finding", **bug("file", "time-limit", text, fix).to_json())
    emit(out, event="done")


if __name__ == "__main__":
    main()
