"""The grader's child process: runs one untrusted lab submission under the lab's rules.

Started by :mod:`handgrad.labgrade` as ``python -m handgrad._labrunner CONFIG_JSON``.
It caps its own address space, loads MNIST, then forgets every module that is
neither NumPy nor the standard library and refuses to import new ones, and only
then executes the submission. Results go to the parent as JSON lines on the
original standard output; the submission's own prints go to standard error.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import resource
import sys
import time
import types
from typing import Any, TextIO

import numpy as np

ALLOWED_TOP_LEVEL = set(sys.stdlib_module_names) | {"numpy", "__main__", "builtins"}
CONTRACT = {
    "__init__": ["self", "input_size", "hidden_size", "output_size", "lr"],
    "forward": ["self", "X"],
    "backward": ["self", "X", "y", "probs"],
    "train_step": ["self", "X", "y"],
    "predict": ["self", "X"],
}
INIT_DEFAULTS = {"input_size": 784, "hidden_size": 128, "output_size": 10, "lr": 0.01}


class Rejected(Exception):
    """The submission broke a rule; the message is the one-line reason."""


class _ImportBlocker:
    """A meta-path finder that refuses any module outside NumPy and the standard library."""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        top = name.partition(".")[0]
        if top not in ALLOWED_TOP_LEVEL:
            self.blocked.append(top)
            raise ImportError(
                f"import of {name!r} is not allowed in the lab "
                "(NumPy and the standard library only)"
            )
        return None


def _emit(out: TextIO, **record: Any) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sandbox() -> _ImportBlocker:
    for name in list(sys.modules):
        if name.partition(".")[0] not in ALLOWED_TOP_LEVEL:
            del sys.modules[name]
    blocker = _ImportBlocker()
    sys.meta_path.insert(0, blocker)
    return blocker


def _load_submission(path: str, blocker: _ImportBlocker) -> type:
    source = open(path, encoding="utf-8").read()
    module = types.ModuleType("submission")
    module.__file__ = path
    try:
        exec(compile(source, path, "exec"), module.__dict__)
    except ImportError as exc:
        if blocker.blocked:
            raise Rejected(
                f"submission imports {blocker.blocked[-1]!r}, which is not allowed "
                "(NumPy and the standard library only)"
            ) from exc
        raise Rejected(f"submission failed to import: {exc}") from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise Rejected(f"submission raised {type(exc).__name__} on import: {exc}") from exc
    cls = module.__dict__.get("NeuralNetwork")
    if not isinstance(cls, type):
        raise Rejected("submission defines no class NeuralNetwork")
    return cls


def _check_signatures(cls: type) -> None:
    for method, expected in CONTRACT.items():
        fn = getattr(cls, method, None)
        if fn is None or not callable(fn):
            raise Rejected(f"NeuralNetwork has no method {method}()")
        params = list(inspect.signature(fn).parameters.values())
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if names[: len(expected)] != expected:
            raise Rejected(
                f"NeuralNetwork.{method} must take ({', '.join(expected)}), "
                f"got ({', '.join(names)})"
            )
        if method == "__init__":
            for p in params:
                if p.name in INIT_DEFAULTS and p.default != INIT_DEFAULTS[p.name]:
                    raise Rejected(
                        f"NeuralNetwork.__init__ default {p.name}={p.default!r}, "
                        f"expected {INIT_DEFAULTS[p.name]!r}"
                    )


def _check_probs(probs: Any, n: int, where: str) -> np.ndarray:
    if not isinstance(probs, np.ndarray):
        raise Rejected(f"{where} returned {type(probs).__name__}, expected a numpy array")
    if probs.shape != (n, 10):
        raise Rejected(f"{where} returned shape {probs.shape}, expected ({n}, 10)")
    if not np.issubdtype(probs.dtype, np.floating):
        raise Rejected(f"{where} returned dtype {probs.dtype}, expected floating probabilities")
    if not np.all(np.isfinite(probs)):
        raise Rejected(f"{where}: probabilities contain NaN/inf (softmax overflow?)")
    if probs.min() < -1e-6 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise Rejected(f"{where}: probabilities are negative or rows do not sum to 1")
    return probs


def _check_loss(loss: Any, where: str) -> float:
    try:
        value = float(loss)
    except (TypeError, ValueError):
        raise Rejected(f"{where} returned {type(loss).__name__}, expected a scalar loss") from None
    if np.ndim(loss) != 0:
        raise Rejected(f"{where} returned an array of shape {np.shape(loss)}, expected a scalar")
    if not np.isfinite(value):
        raise Rejected(f"{where} returned a non-finite loss ({value})")
    return value


def _check_contract(model: Any, x: np.ndarray, y: np.ndarray) -> None:
    """Run the contract checks on a copy, so the graded run starts untouched."""
    trial = copy.deepcopy(model)
    for name in ("W1", "b1", "W2", "b2"):
        if not isinstance(getattr(trial, name, None), np.ndarray):
            raise Rejected(f"NeuralNetwork has no numpy array attribute {name}")
    before = {n: getattr(trial, n).copy() for n in ("W1", "b1", "W2", "b2")}
    probs = _check_probs(trial.forward(x), len(x), "forward")
    _check_loss(trial.backward(x, y, probs), "backward")
    unchanged = [n for n in before if np.array_equal(before[n], getattr(trial, n))]
    if unchanged:
        raise Rejected(f"backward did not update {', '.join(unchanged)}")
    _check_loss(trial.train_step(x, y), "train_step")
    pred = np.asarray(trial.predict(x))
    if pred.shape != (len(x),) or not np.issubdtype(pred.dtype, np.integer):
        raise Rejected(
            f"predict returned shape {pred.shape} dtype {pred.dtype}, expected ({len(x)},) ints"
        )


def _evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    probs = _check_probs(model.forward(x), len(x), "forward (validation)")
    picked = np.clip(probs[np.arange(len(y)), y].astype(np.float64), 1e-12, 1.0)
    return float(-np.log(picked).mean()), float(np.mean(probs.argmax(axis=1) == y))


def run(cfg: dict[str, Any], out: TextIO) -> None:
    from handgrad.data import load_mnist, stratified_split

    data = load_mnist(cfg.get("data_dir"))
    x_all = data.x_train.reshape(len(data.x_train), -1).astype(np.float32) / np.float32(255)
    y_all = data.y_train
    rng = np.random.default_rng(cfg["seed"])
    if cfg.get("train_size"):
        keep = rng.permutation(len(y_all))[: cfg["train_size"]]
        x_all, y_all = x_all[keep], y_all[keep]
    x_val = y_val = None
    if cfg["val_fraction"] > 0:
        tr, va = stratified_split(y_all, cfg["val_fraction"], rng)
        x_val, y_val = x_all[va], y_all[va]
        x_all, y_all = x_all[tr], y_all[tr]
    x_test = data.x_test.reshape(len(data.x_test), -1).astype(np.float32) / np.float32(255)
    y_test = data.y_test
    del data
    _emit(
        out,
        event="data",
        train=len(y_all),
        val=0 if y_val is None else len(y_val),
        test=len(y_test),
    )

    blocker = _sandbox()
    start = time.perf_counter()
    cls = _load_submission(cfg["path"], blocker)
    _check_signatures(cls)
    model = cls()
    _check_contract(model, x_all[:64], y_all[:64])
    bs = cfg["batch_size"]
    for epoch in range(cfg["epochs"]):
        t0 = time.perf_counter()
        order = rng.permutation(len(y_all))
        total = 0.0
        for s in range(0, len(order), bs):
            idx = order[s : s + bs]
            total += _check_loss(model.train_step(x_all[idx], y_all[idx]), "train_step") * len(idx)
        record: dict[str, Any] = {
            "event": "epoch",
            "epoch": epoch + 1,
            "train_loss": total / len(order),
        }
        if x_val is not None and y_val is not None:
            record["val_loss"], record["val_accuracy"] = _evaluate(model, x_val, y_val)
        record["seconds"] = time.perf_counter() - t0
        _emit(out, **record)
    pred = np.asarray(model.predict(x_test))
    if pred.shape != (len(y_test),):
        raise Rejected(f"predict returned shape {pred.shape}, expected ({len(y_test)},)")
    _emit(
        out,
        event="done",
        test_accuracy=float(np.mean(pred == y_test)),
        seconds=time.perf_counter() - start,
        peak_mb=_peak_mb(),
    )


def main() -> None:
    cfg = json.loads(sys.argv[1])
    limit = int(cfg["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = os.fdopen(os.dup(1), "w")
    sys.stdout = sys.stderr  # the submission's prints must not mix with the protocol
    from handgrad.data import DataError

    try:
        run(cfg, out)
    except DataError as exc:
        _emit(out, event="error", reason=str(exc))
    except Rejected as exc:
        _emit(out, event="rejected", reason=str(exc))
    except MemoryError:
        _emit(out, event="rejected", reason=f"memory limit exceeded ({cfg['memory_mb']} MB)")
    except Exception as exc:  # the submission crashed: report it, never a traceback
        _emit(out, event="rejected", reason=f"submission raised {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
