"""Grade a lab submission the way the lab does (``handgrad lab grade``).

The grader runs the file in a separate process (:mod:`handgrad.lab._runner`) in a
session of its own, whose address space is capped (2 GB by default), where
importing anything but NumPy and the standard library fails, and whose whole
process group is killed when it runs past the time limit (120 s by default). The
contract of ``NeuralNetwork`` is checked before training; a per-epoch table
follows, then the MNIST test accuracy, the time and the peak memory.

The child sends the validation probabilities and the test predictions back on a
private pipe and never holds the labels; this process scores them with its own
NumPy. That keeps honest mistakes (and casual forgeries) from passing; it does
not make the child a security sandbox (see ``docs/lab.md``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from handgrad._argtypes import input_file_error
from handgrad.lab._child import ChildEnd, crash_reason, run_child


@dataclass
class GradeResult:
    """What the grader saw: ``passed`` and, if not, the one-line ``reason``.

    ``test_accuracy`` and each epoch's ``val_loss`` / ``val_accuracy`` are computed
    here from the child's predictions; ``train_loss``, ``seconds`` and ``peak_mb``
    are the child's own report.
    """

    passed: bool
    reason: str = ""
    test_accuracy: float | None = None
    seconds: float | None = None
    peak_mb: float | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)


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


class _Scorer:
    """Turns the child's JSON lines into a :class:`GradeResult`, scoring with our NumPy."""

    def __init__(self, y_val: np.ndarray, y_test: np.ndarray, out: IO[str] | None) -> None:
        self.y_val, self.y_test, self.out = y_val, y_test, out
        self.result = GradeResult(passed=False)
        self.done = False
        self.protocol_error = ""

    def take(self, line: bytes) -> None:
        from handgrad.lab._runner import LABELS_DTYPE, PROBS_DTYPE, decode_array

        try:
            record = json.loads(line)
            event = record.pop("event")
            if event == "epoch":
                row = {
                    "epoch": int(record["epoch"]),
                    "train_loss": float(record["train_loss"]),
                    "seconds": float(record["seconds"]),
                }
                if "val_probs" in record:
                    n = len(self.y_val)
                    probs = decode_array(record["val_probs"], PROBS_DTYPE, (n, 10))
                    picked = probs[np.arange(n), self.y_val].astype(np.float64)
                    row["val_loss"] = float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())
                    row["val_accuracy"] = float(np.mean(probs.argmax(axis=1) == self.y_val))
                self._row(row)
            elif event in ("rejected", "error"):
                self.result.reason = self.result.reason or " ".join(str(record["reason"]).split())
            elif event == "done" and not self.done:
                n = len(self.y_test)
                pred = decode_array(record["predictions"], LABELS_DTYPE, (n,))
                self.result.test_accuracy = float(np.mean(pred == self.y_test))
                self.result.seconds = float(record["seconds"])
                self.result.peak_mb = float(record["peak_mb"])
                self.done = True
            else:
                raise ValueError(f"unexpected event {event!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.protocol_error = self.protocol_error or (
                f"the grader's result pipe carried something it did not send ({exc}); "
                "did the submission write to it?"
            )

    def _row(self, row: dict[str, Any]) -> None:
        self.result.epochs.append(row)
        if self.out is not None:
            if len(self.result.epochs) == 1:
                print("epoch  train loss  val loss  val acc  seconds", file=self.out)
            _print_row(row, self.out)


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
    out: IO[str] | None = None,
) -> GradeResult:
    """Grade the submission at ``path``; print the table to ``out`` (None: silent).

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
    try:
        data = load_mnist(data_dir)
    except DataError as exc:
        return GradeResult(passed=False, reason=str(exc))
    _, val_idx, _ = split_indices(data.y_train, train_size, val_fraction, seed)
    n_train = min(train_size or len(data.y_train), len(data.y_train)) - len(val_idx)
    scorer = _Scorer(data.y_train[val_idx], data.y_test, out)
    del data
    if out is not None:
        print(
            f"training on {n_train} images, validating on {len(val_idx)}, "
            f"testing on {len(scorer.y_test)}",
            file=out,
        )
    cfg = {
        "path": str(submission.resolve()),
        "memory_mb": int(memory_mb),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "train_size": train_size,
        "val_fraction": float(val_fraction),
        "seed": int(seed),
        "data_dir": None if data_dir is None else str(data_dir),
    }
    end = run_child("handgrad.lab._runner", cfg, time_limit, scorer.take)
    return _decide(end, scorer, time_limit, memory_mb, min_accuracy)


def _decide(
    end: ChildEnd, scorer: _Scorer, time_limit: float, memory_mb: int, min_accuracy: float
) -> GradeResult:
    """Pass or fail, from how the child ended and what it reported."""
    result = scorer.result
    if end.timed_out:
        result.reason = f"time limit exceeded: {time_limit:g} s"
        return result
    if scorer.protocol_error:
        result.reason = scorer.protocol_error
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
