"""Grade a lab submission the way the lab does (``handgrad lab grade``).

The grader runs the file in a child process (:mod:`handgrad.lab._runner`) in a
session of its own, whose address space is capped (2 GB by default), where
importing anything but NumPy and the standard library fails, and whose
processes are all killed when it runs past the time limit (120 s by default) or
together hold more memory than the cap. The contract of ``NeuralNetwork`` is
checked before training; a per-epoch table follows, then the MNIST test
accuracy, the time and the peak memory, all measured here.

This process loads MNIST and hands the child the training images and labels and
the validation and test images, the latter two in an order drawn in secret; the
child sends back probabilities and predictions, which this process checks and
scores against labels the child never receives. Where the machine allows it
(Linux, the grader run as root) the child also runs as a user id of its own, in
a mount namespace where the MNIST files and the git work tree around handgrad
(a checkout's ``.git`` holds them too) are hidden (:mod:`handgrad.lab._isolate`).
What holds, and what does not, is in "The grader" in ``docs/lab.md``.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from handgrad._argtypes import input_file_error
from handgrad._threads import BLAS_ENV
from handgrad.lab._child import ChildEnd, ProtocolViolation, crash_reason, run_child
from handgrad.lab._isolate import UID_RANGE

#: Run the child as a user id of its own, in a mount namespace of its own, when the
#: machine allows it (Linux, run as root). Tests set it to False for the plain path.
ISOLATE = True


@dataclass
class GradeResult:
    """What the grader saw: ``passed`` and, if not, the one-line ``reason``.

    ``test_accuracy`` and each epoch's ``val_loss`` / ``val_accuracy`` are computed
    here from the child's predictions, against labels it never received;
    ``seconds`` (from the child's start to its predictions, and each epoch's),
    ``peak_mb`` (the child's processes together) and ``processes`` are measured
    here. Each epoch's ``train_loss`` is the child's own report, for information.
    ``isolation`` says how the child was isolated (``["none"]``: not at all).
    """

    passed: bool
    reason: str = ""
    test_accuracy: float | None = None
    seconds: float | None = None
    peak_mb: float | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    isolation: list[str] = field(default_factory=list)
    processes: int = 0


def _print_row(record: dict[str, Any], out: IO[str]) -> None:
    val_loss = f"{record['val_loss']:.4f}" if "val_loss" in record else "-"
    val_acc = f"{record['val_accuracy']:.2%}" if "val_accuracy" in record else "-"
    print(
        f"{record['epoch']:>5}  {record['train_loss']:>10.4f}  {val_loss:>8}  {val_acc:>7}  "
        f"{record['seconds']:>6.1f}",
        file=out,
        flush=True,
    )


def _check_arguments(
    time_limit: float,
    memory_mb: int,
    epochs: int,
    batch_size: int,
    train_size: int | None,
    val_fraction: float,
    seed: int,
    min_accuracy: float,
) -> None:
    """ValueError naming the first argument that makes no sense (never the submission's fault)."""
    positive = {"time_limit": time_limit, "memory_mb": memory_mb, "epochs": epochs}
    positive |= {"batch_size": batch_size, "train_size": 1 if train_size is None else train_size}
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive, got {value}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0.0 <= min_accuracy <= 1.0:
        raise ValueError(f"min_accuracy must be in [0, 1], got {min_accuracy}")
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}")


def isolation_available() -> bool:
    """Can the child run as a user id and in a mount namespace of its own? (Linux, as root)."""
    return ISOLATE and sys.platform.startswith("linux") and os.geteuid() == 0


#: What each field of the child's report holds: a refusal says what it expected in words.
_FIELDS = {
    "isolation": "how the child is isolated",
    "epoch": "the epoch's number",
    "train_loss": "the training loss",
    "val_probs": "the validation probabilities",
    "predictions": "the test predictions",
    "reason": "the reason",
}


def _missing(event: str, key: object) -> str:
    what = _FIELDS.get(str(key), "a field")
    return f"expected {what}, {str(key)!r}, in each {event} line; this one has none"


def _refuse(detail: str) -> ProtocolViolation:
    return ProtocolViolation(
        f"the grader's result pipe carried something it did not send ({detail}); "
        "did the submission write to it?"
    )


class _Scorer:
    """Turns the child's JSON lines into a :class:`GradeResult`, checking and scoring each.

    The lines must come in the order the child sends them: ``ready``, one
    ``epoch`` per epoch, ``done``; anything else ends the run (see
    :class:`ProtocolViolation`), so a flood of lines costs one line.
    """

    def __init__(
        self, y_val: np.ndarray, y_test: np.ndarray, epochs: int, out: IO[str] | None
    ) -> None:
        self.y_val, self.y_test, self.epochs, self.out = y_val, y_test, epochs, out
        self.result = GradeResult(passed=False)
        self.done = False
        self.ready_at: float | None = None
        self.last_at = 0.0

    def take(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("event"), str):
            raise _refuse(f"expected a JSON report line with an 'event'; got {bytes(line[:60])!r}")
        event = record.pop("event")
        if self.done or (self.ready_at is None and event != "ready"):
            raise _refuse(f"a {event!r} line out of order")
        try:
            if event == "ready":
                self._ready(record)
            elif event == "epoch":
                self._epoch(record)
            elif event in ("rejected", "error"):
                reason = " ".join(str(record["reason"]).split())[:500]
                self.result.reason = self.result.reason or reason
            elif event == "done":
                self._done(record)
            else:
                raise ValueError(f"unexpected event {event!r}")
        except KeyError as exc:
            raise _refuse(_missing(event, exc.args[0])) from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise _refuse(str(exc)[:200]) from None

    def _ready(self, record: dict[str, Any]) -> None:
        if self.ready_at is not None:
            raise ValueError("a second 'ready'")
        self.ready_at = self.last_at = time.monotonic()
        isolation = record["isolation"]
        if not isinstance(isolation, list):
            raise TypeError("isolation is not a list")
        self.result.isolation = [str(x)[:200] for x in isolation[:8]]
        if self.out is not None:
            if self.result.isolation == ["none"]:
                how = (
                    "not isolated (the grader is not root on Linux): it runs as you, "
                    "can read your files and signal the grader"
                )
            else:
                how = "isolated: " + ", ".join(self.result.isolation)
            print(f"submission {how}", file=self.out, flush=True)

    def _epoch(self, record: dict[str, Any]) -> None:
        from handgrad.lab._runner import PROBS_DTYPE, decode_array

        number = int(record["epoch"])
        if number != len(self.result.epochs) + 1 or number > self.epochs:
            raise ValueError(f"epoch {number} after {len(self.result.epochs)} of {self.epochs}")
        now = time.monotonic()
        row = {"epoch": number, "train_loss": float(record["train_loss"])}
        row["seconds"], self.last_at = now - self.last_at, now
        n = len(self.y_val)
        if n:
            probs = decode_array(record["val_probs"], PROBS_DTYPE, (n, 10))
            if not np.all(np.isfinite(probs)):
                raise ValueError("validation probabilities that are not finite")
            picked = probs[np.arange(n), self.y_val].astype(np.float64)
            row["val_loss"] = float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())
            row["val_accuracy"] = float(np.mean(probs.argmax(axis=1) == self.y_val))
        self.result.epochs.append(row)
        if self.out is not None:
            if number == 1:
                print("epoch  train loss  val loss  val acc  seconds", file=self.out)
            _print_row(row, self.out)

    def _done(self, record: dict[str, Any]) -> None:
        from handgrad.lab._runner import LABELS_DTYPE, decode_array

        if len(self.result.epochs) != self.epochs:
            raise ValueError(f"'done' after {len(self.result.epochs)} of {self.epochs} epochs")
        assert self.ready_at is not None
        self.result.seconds = time.monotonic() - self.ready_at
        n = len(self.y_test)
        pred = decode_array(record["predictions"], LABELS_DTYPE, (n,))
        self.done = True
        if pred.min() < 0 or pred.max() > 9:
            self.result.reason = self.result.reason or (
                f"predict returned labels from {pred.min()} to {pred.max()} on the {n} test "
                "images, expected classes 0..9"
            )
            return
        self.result.test_accuracy = float(np.mean(pred == self.y_test))


def _mnist_places(data_dir: str | Path | None) -> list[str]:
    """Every directory the MNIST files are looked for in: what the isolated child may not read."""
    from handgrad.data.mnist import ENV_VAR, SHIPPED_DIR, cache_dir, find_mnist

    places = [SHIPPED_DIR, cache_dir(), find_mnist(data_dir)]
    env = os.environ.get(ENV_VAR)
    if env:
        places += [Path(env).expanduser() / "mnist", Path(env).expanduser()]
    return [str(p) for p in places]


def grade(
    path: str | Path,
    *,
    time_limit: float = 120.0,
    memory_mb: int = 2048,
    epochs: int = 8,
    batch_size: int = 64,
    train_size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | Path | None = None,
    min_accuracy: float = 0.85,
    threads: int = 1,
    out: IO[str] | None = None,
) -> GradeResult:
    """Grade the submission at ``path``; print the table to ``out`` (None: silent).

    ``threads``: the BLAS threads of the submission's NumPy (``OPENBLAS_NUM_THREADS``,
    ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` in its environment, whatever this
    process has): one by default, the same on every machine, so that a time limit
    means the same; a lab's own grader may use more.

    Raises ValueError for arguments that make no sense, FileNotFoundError when
    there is no file; everything the submission does wrong is a failed result.
    """
    from handgrad.data import DataError, load_mnist
    from handgrad.lab._runner import split_indices

    submission = Path(path)
    if not submission.is_file():
        raise input_file_error(submission, "submission")
    _check_arguments(
        time_limit, memory_mb, epochs, batch_size, train_size, val_fraction, seed, min_accuracy
    )
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    try:
        data = load_mnist(data_dir)
        hide = _mnist_places(data_dir)
    except DataError as exc:
        return GradeResult(passed=False, reason=str(exc))
    train_idx, val_idx, rng = split_indices(data.y_train, train_size, val_fraction, seed)
    # The order the child sees the validation and test images in comes from the
    # operating system's entropy: nothing it can read says which image is which.
    secret = np.random.default_rng(secrets.randbits(128))
    val_idx = val_idx[secret.permutation(len(val_idx))]
    test_order = secret.permutation(len(data.y_test))
    payload = [
        np.ascontiguousarray(data.x_train[train_idx], dtype=np.uint8),
        np.ascontiguousarray(data.y_train[train_idx], dtype="<i8"),
        np.ascontiguousarray(data.x_train[val_idx], dtype=np.uint8),
        np.ascontiguousarray(data.x_test[test_order], dtype=np.uint8),
    ]
    scorer = _Scorer(data.y_train[val_idx], data.y_test[test_order], epochs, out)
    del data
    if out is not None:
        print(
            f"training on {len(train_idx)} images, validating on {len(val_idx)}, "
            f"testing on {len(scorer.y_test)}; NumPy's BLAS on {threads} "
            f"thread{'s' if threads > 1 else ''}",
            file=out,
            flush=True,
        )
    uid = secrets.randbelow(UID_RANGE[1] - UID_RANGE[0]) + UID_RANGE[0]
    isolate = {"uid": uid, "hide": hide} if isolation_available() else None
    cfg = {
        "path": str(submission.resolve()),
        "memory_mb": int(memory_mb),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "sizes": [len(train_idx), len(val_idx), len(scorer.y_test)],
        "rng_state": rng.bit_generator.state,
        "isolate": isolate,
    }
    longest = max(len(val_idx) * 10 * PROBS_BYTES, len(scorer.y_test) * 8) * 4 // 3
    blas = {v: str(threads) for v in BLAS_ENV}
    end = run_child(
        "handgrad.lab._runner",
        cfg,
        time_limit,
        scorer.take,
        blas,
        payload=[a.data.cast("B") for a in payload if a.size],
        uid=uid if isolate else None,
        memory_limit_mb=memory_mb,
        max_line=longest + 4096,
    )
    return _decide(end, scorer, time_limit, memory_mb, min_accuracy)


#: Bytes per probability on the result pipe (float32).
PROBS_BYTES = 4


def _decide(
    end: ChildEnd, scorer: _Scorer, time_limit: float, memory_mb: int, min_accuracy: float
) -> GradeResult:
    """Pass or fail, from how the child ended and what this process checked of its report."""
    result = scorer.result
    result.peak_mb, result.processes = end.peak_mb, end.processes
    if end.timed_out:
        result.reason = f"time limit exceeded: {time_limit:g} s"
    elif end.memory_exceeded is not None:
        result.reason = (
            f"memory limit exceeded ({memory_mb} MB): the submission's {end.processes} "
            f"process{'es' if end.processes > 1 else ''} held {end.memory_exceeded:.0f} MB together"
        )
    elif end.violation:
        result.reason = end.violation
    elif not result.reason and not scorer.done:
        result.reason = crash_reason(end, memory_mb)
    if result.reason:
        return result
    assert result.test_accuracy is not None
    if result.test_accuracy < min_accuracy:
        result.reason = (
            f"test accuracy {result.test_accuracy:.2%} is below the required {min_accuracy:.2%}"
        )
        return result
    result.passed = True
    return result
