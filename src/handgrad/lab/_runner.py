"""The grader's child process: runs one untrusted lab submission under the lab's rules.

Started by :mod:`handgrad.lab.grader` as ``python -m handgrad.lab._runner CONFIG_JSON``.
It points file descriptor 1 at standard error and caps its own address space
(:func:`handgrad.lab._sandbox.confine`), reads from standard input the images
the parent hands it (training images and labels, validation and test images in
an order the parent drew in secret; never a validation or test label) and the
submission's source, isolates itself where the parent asks
(:mod:`handgrad.lab._isolate`), forgets every module that is neither NumPy nor
the standard library and refuses to import new ones, and only then executes the
submission. It reports on a private pipe (``result_fd`` in the config) as JSON
lines: ``ready``, per-epoch training loss and validation probabilities, the test
predictions, or the reason for a rejection. The parent checks and scores the
predictions and keeps the time and the memory itself.

What this does and does not stop is in "The grader" in ``docs/lab.md``.
"""

from __future__ import annotations

import base64
import copy
import json
import sys
import types
from typing import Any, TextIO

import numpy as np

from handgrad.lab._contract import signature_problem, weights_problem
from handgrad.lab._isolate import die_with_parent, isolate, start_reaper
from handgrad.lab._sandbox import ImportBlocker, confine, emit, read_source, sandbox

#: How arrays travel on the result pipe: little-endian raw bytes, base64 in the JSON line.
PROBS_DTYPE = np.dtype("<f4")
LABELS_DTYPE = np.dtype("<i8")


class Rejected(Exception):
    """The submission broke a rule; the message is the one-line reason."""


# -- the protocol with the parent ---------------------------------------------------------


def encode_array(a: np.ndarray, dtype: np.dtype) -> str:
    """``a`` as base64 of its raw bytes in ``dtype`` (the shape travels separately)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def decode_array(text: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`encode_array`; ValueError unless it holds exactly ``shape``."""
    if not isinstance(text, str):
        raise ValueError(f"expected base64 text, got {type(text).__name__}")
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{len(raw)} bytes do not hold a {dtype} array of shape {shape}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def split_indices(
    y_train: np.ndarray, train_size: int | None, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """``(train_idx, val_idx, rng)`` into MNIST's training set; parent and child agree.

    ``rng`` is left where the split left it: the child shuffles the epochs with it.
    """
    from handgrad.data import stratified_split

    rng = np.random.default_rng(seed)
    keep = np.arange(len(y_train))
    if train_size:
        keep = rng.permutation(len(y_train))[:train_size]
    val = np.zeros(0, dtype=np.int64)
    if val_fraction > 0:
        tr, va = stratified_split(y_train[keep], val_fraction, rng)
        keep, val = keep[tr], keep[va]
    return keep, val, rng


def _pixels(images: np.ndarray) -> np.ndarray:
    """A fresh ``(N, 784)`` float32 array in [0, 1]: the submission may write into it."""
    x = images.reshape(len(images), -1).astype(np.float32)
    x /= np.float32(255)  # in place: one float copy of the images at a time
    return x


# -- running the submission ---------------------------------------------------------------


def _call(where: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, with ``sys.exit`` in submission code named as such."""
    try:
        return fn(*args)
    except SystemExit as exc:
        raise Rejected(f"submission called sys.exit({exc.code!r}) {where}") from None


def _load_submission(path: str, source: Any, blocker: ImportBlocker) -> type:
    module = types.ModuleType("submission")
    module.__file__ = path
    try:
        if isinstance(source, BaseException):
            raise source
        _call("at import", exec, compile(source, path, "exec"), module.__dict__)
    except ImportError as exc:
        if blocker.blocked:
            raise Rejected(
                f"submission imports {blocker.blocked[-1]!r}, which is not allowed "
                "(NumPy and the standard library only)"
            ) from exc
        raise Rejected(f"submission failed to import: {exc}") from exc
    except (MemoryError, Rejected):
        raise
    except Exception as exc:
        raise Rejected(f"submission raised {type(exc).__name__} on import: {exc}") from exc
    cls = module.__dict__.get("NeuralNetwork")
    if not isinstance(cls, type):
        raise Rejected("submission defines no class NeuralNetwork")
    return cls


def _check_signatures(cls: type) -> None:
    problem = signature_problem(cls)
    if problem:
        raise Rejected(problem)


def _check_weights(model: Any) -> None:
    """W1, b1, W2, b2 are arrays of the lab's 784 -> 128 -> 10 network."""
    problem = weights_problem(model)
    if problem:
        raise Rejected(problem)


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


def _check_labels(pred: Any, n: int, where: str) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.shape != (n,) or not np.issubdtype(pred.dtype, np.integer):
        raise Rejected(
            f"predict returned shape {pred.shape} dtype {pred.dtype}{where}, expected ({n},) ints"
        )
    return pred


def _check_contract(model: Any, x: np.ndarray, y: np.ndarray) -> None:
    """Run the contract checks on a copy, so the graded run starts untouched.

    ``x`` and ``y`` are the submission's to keep: copies of the grader's data.
    """
    _check_weights(model)
    trial = _call("in __deepcopy__", copy.deepcopy, model)
    before = {n: getattr(trial, n).copy() for n in ("W1", "b1", "W2", "b2")}
    probs = _check_probs(_call("in forward", trial.forward, x), len(x), "forward")
    _check_loss(_call("in backward", trial.backward, x, y, probs), "backward")
    unchanged = [n for n in before if np.array_equal(before[n], getattr(trial, n))]
    if unchanged:
        raise Rejected(f"backward did not update {', '.join(unchanged)}")
    _check_loss(_call("in train_step", trial.train_step, x, y), "train_step")
    _check_labels(_call("in predict", trial.predict, x), len(x), "")


def _receive(stream: Any, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Read one array of ``shape`` from the parent's pipe, byte for byte."""
    a = np.empty(shape, dtype=np.dtype(dtype))
    if not a.size:
        return a
    view = a.data.cast("B")
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            raise EOFError("the grader's data pipe closed early")
        got += n
    return a


def receive_data(stream: Any, sizes: list[int]) -> tuple[np.ndarray, ...]:
    """``(train images, train labels, validation images, test images)``, as the parent sends them.

    The images are ``uint8 (N, 28, 28)``; the only labels are the training ones.
    """
    n_train, n_val, n_test = sizes
    return (
        _receive(stream, (n_train, 28, 28), "u1"),
        _receive(stream, (n_train,), LABELS_DTYPE.str),
        _receive(stream, (n_val, 28, 28), "u1"),
        _receive(stream, (n_test, 28, 28), "u1"),
    )


def run(cfg: dict[str, Any], out: TextIO, data: tuple[np.ndarray, ...], source: Any) -> None:
    """Train and test the submission; report on ``out``. Holds no validation/test labels.

    ``source``: the submission's text, or the SyntaxError reading it raised.
    """
    train_images, y_train, val_images, test_images = data
    rng = np.random.default_rng()
    rng.bit_generator.state = cfg["rng_state"]  # where the parent's split left it
    x_train = _pixels(train_images)
    del train_images, data

    blocker = sandbox()
    cls = _load_submission(cfg["path"], source, blocker)
    _check_signatures(cls)
    model = _call("in __init__", cls)
    _check_contract(model, x_train[:64].copy(), y_train[:64].copy())
    bs = cfg["batch_size"]
    for epoch in range(cfg["epochs"]):
        order = rng.permutation(len(y_train))
        total = 0.0
        for s in range(0, len(order), bs):
            idx = order[s : s + bs]  # fancy indexing: each batch is a fresh copy
            loss = _call("in train_step", model.train_step, x_train[idx], y_train[idx])
            total += _check_loss(loss, "train_step") * len(idx)
        record: dict[str, Any] = {"event": "epoch", "epoch": epoch + 1}
        record["train_loss"] = total / len(order)
        if len(val_images):
            probs = _call("in forward", model.forward, _pixels(val_images))
            probs = _check_probs(probs, len(val_images), "forward (validation)")
            record["val_probs"] = encode_array(probs, PROBS_DTYPE)
        emit(out, **record)
    n = len(test_images)
    pred = _call("in predict", model.predict, _pixels(test_images))
    pred = _check_labels(pred, n, f" on the {n} test images")
    emit(out, event="done", predictions=encode_array(pred, LABELS_DTYPE))


def main() -> None:
    cfg = json.loads(sys.argv[1])
    out = confine(cfg)
    start_reaper(cfg["isolate"]["uid"] if cfg.get("isolate") else None)
    try:
        data = receive_data(sys.stdin.buffer, cfg["sizes"])
    except (EOFError, OSError) as exc:
        emit(out, event="error", reason=f"the grader could not hand over the images: {exc}")
        return
    source: Any
    try:
        source = read_source(cfg["path"])  # now: once isolated, the file may be out of reach
    except (SyntaxError, OSError) as exc:
        source = exc
    isolation = ["none"]
    if cfg.get("isolate"):
        try:
            isolation = isolate(cfg["isolate"]["uid"], cfg["isolate"]["hide"])
        except OSError as exc:
            emit(out, event="error", reason=f"the grader could not isolate the submission: {exc}")
            return
        die_with_parent(cfg["parent_pid"])  # a change of user id cleared it
    emit(out, event="ready", isolation=isolation)
    try:
        run(cfg, out, data, source)
    except Rejected as exc:
        emit(out, event="rejected", reason=str(exc))
    except MemoryError:
        emit(out, event="rejected", reason=f"memory limit exceeded ({cfg['memory_mb']} MB)")
    except SystemExit as exc:  # from submission code the calls above do not wrap (a thread, ...)
        emit(out, event="rejected", reason=f"submission called sys.exit({exc.code!r})")
    except BaseException as exc:  # the submission crashed: report it, never a traceback
        emit(out, event="rejected", reason=f"submission raised {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
