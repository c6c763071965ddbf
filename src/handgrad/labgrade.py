"""``handgrad lab``: export the lab file, and grade a submission the way the lab does.

The grader runs the file in a separate process (:mod:`handgrad._labrunner`) in a
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

import argparse
import collections
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from handgrad._argtypes import _number, fraction, non_negative_int, positive_float, positive_int

LAB_SOURCE = Path(__file__).with_name("lab.py")
#: Signs in the child's last words that an allocation failed under the memory cap.
_OUT_OF_MEMORY = ("MemoryError", "Cannot allocate memory", "out of memory", "bad_alloc")


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


def export_lab(path: str | Path = "neural_network.py") -> Path:
    """Write the standalone lab file (NumPy only) to ``path``."""
    target = Path(path)
    if target.is_dir():
        target = target / "neural_network.py"
    shutil.copyfile(LAB_SOURCE, target)
    return target


def _read_lines(stream: IO[bytes], sink: queue.Queue[bytes | None]) -> None:
    with stream:
        for line in stream:
            sink.put(line)
    sink.put(None)


def _read_tail(stream: IO[bytes], tail: collections.deque[str]) -> None:
    with stream:
        for line in stream:
            tail.append(line.decode("utf-8", "replace").strip())


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


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Has the child exited? Leaves it unreaped, so its pid (= its group's id) stays taken."""
    if not hasattr(os, "waitid"):
        return proc.poll() is not None
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped behind our back (SIGCHLD ignored)
        return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group: the child and anything it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _crash_reason(code: int, tail: list[str], memory_mb: int) -> str:
    """Why the child ended without a result, from its exit status and last stderr lines."""
    said = " ".join(tail[-2:])[-500:]  # its last words, not a megabyte of them
    if any(sign in line for line in tail for sign in _OUT_OF_MEMORY):
        return f"memory limit exceeded ({memory_mb} MB)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        reason = f"submission crashed: killed by signal {name}"
        if -code == signal.SIGKILL:
            reason += " (not the grader's doing: the system's out-of-memory killer, or a user)"
        return reason
    if code == 0:
        return "submission ended the grading process early (exit code 0)" + (
            f": {said}" if said else ""
        )
    return f"submission crashed (exit code {code}): {said}"


class _Scorer:
    """Turns the child's JSON lines into a :class:`GradeResult`, scoring with our NumPy."""

    def __init__(self, y_val: np.ndarray, y_test: np.ndarray, out: IO[str] | None) -> None:
        self.y_val, self.y_test, self.out = y_val, y_test, out
        self.result = GradeResult(passed=False)
        self.done = False
        self.protocol_error = ""

    def take(self, line: bytes) -> None:
        from handgrad._labrunner import LABELS_DTYPE, PROBS_DTYPE, decode_array

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
    from handgrad._labrunner import split_indices
    from handgrad.data import DataError, load_mnist

    submission = Path(path)
    if not submission.is_file():
        raise FileNotFoundError(f"submission not found: {submission}")
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
    read_fd, write_fd = os.pipe()
    cfg = {
        "path": str(submission.resolve()),
        "memory_mb": int(memory_mb),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "train_size": train_size,
        "val_fraction": float(val_fraction),
        "seed": int(seed),
        "data_dir": None if data_dir is None else str(data_dir),
        "result_fd": write_fd,
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "handgrad._labrunner", json.dumps(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(write_fd,),
            start_new_session=True,  # its own process group, killed as a whole
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    try:
        return _supervise(proc, read_fd, scorer, time_limit, memory_mb, min_accuracy)
    finally:
        if proc.returncode is None:
            _kill_group(proc)
            proc.wait()


def _supervise(
    proc: subprocess.Popen[bytes],
    read_fd: int,
    scorer: _Scorer,
    time_limit: float,
    memory_mb: int,
    min_accuracy: float,
) -> GradeResult:
    """Read the child's report until it exits or its time is up; then decide."""
    lines: queue.Queue[bytes | None] = queue.Queue()
    tail: collections.deque[str] = collections.deque(maxlen=20)
    reader = threading.Thread(
        target=_read_lines, args=(os.fdopen(read_fd, "rb"), lines), daemon=True
    )
    reader.start()
    assert proc.stderr is not None
    stderr_reader = threading.Thread(target=_read_tail, args=(proc.stderr, tail), daemon=True)
    stderr_reader.start()
    result = scorer.result
    deadline = time.monotonic() + time_limit
    eof = False
    while not _exited(proc):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _kill_group(proc)
            proc.wait()
            result.reason = f"time limit exceeded: {time_limit:g} s"
            return result
        if eof:
            time.sleep(min(remaining, 0.05))
            continue
        try:
            line = lines.get(timeout=min(remaining, 0.2))
        except queue.Empty:
            continue
        if line is None:
            eof = True
        else:
            scorer.take(line)
    _kill_group(proc)  # whatever the submission started dies with it
    code = proc.wait()
    # Every writer is gone now; read what is left (a writer that escaped the group by
    # starting its own session only delays us by the join timeout).
    reader.join(timeout=2.0)
    while not lines.empty():
        line = lines.get()
        if line is not None:
            scorer.take(line)
    stderr_reader.join(timeout=2.0)
    if scorer.protocol_error:
        result.reason = scorer.protocol_error
    elif not result.reason and not scorer.done:
        result.reason = _crash_reason(code, list(tail), memory_mb)
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


# -- command line -------------------------------------------------------------------------


def _cmd_export(args: argparse.Namespace) -> int:
    path = export_lab(args.path)
    print(f"wrote {path} (NumPy only; paste it into the lab's editor)")
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else LAB_SOURCE
    print(
        f"grading {path}: {args.epochs} epochs, batch {args.batch_size}, "
        f"train size {args.train_size or 'all'}, val fraction {args.val_fraction:g}, "
        f"limits {args.time_limit:g} s / {args.memory_mb} MB"
    )
    result = grade(
        path,
        time_limit=args.time_limit,
        memory_mb=args.memory_mb,
        epochs=args.epochs,
        batch_size=args.batch_size,
        train_size=args.train_size,
        val_fraction=args.val_fraction,
        seed=args.seed,
        data_dir=args.data_dir,
        min_accuracy=args.min_accuracy,
        out=sys.stdout,
    )
    if result.test_accuracy is not None:
        print(
            f"test accuracy {result.test_accuracy:.2%}  time {result.seconds:.1f} s  "
            f"peak memory {result.peak_mb:.0f} MB"
        )
    if not result.passed:
        print(f"FAILED: {result.reason}")
        return 1
    print(
        f"PASSED (>= {args.min_accuracy:.0%} within {args.time_limit:g} s and {args.memory_mb} MB)"
    )
    return 0


_accuracy = _number(float, lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")


def add_lab_parser(subparsers: Any) -> None:
    """Add ``lab export`` and ``lab grade`` to the ``handgrad`` command line."""
    lab = subparsers.add_parser(
        "lab", help="the 'MNIST from scratch' lab: export the file, grade it"
    )
    sub = lab.add_subparsers(
        dest="lab_command", metavar="COMMAND", required=True, parser_class=type(lab)
    )
    p = sub.add_parser("export", help="write the single-file NumPy NeuralNetwork")
    p.add_argument(
        "path",
        nargs="?",
        default="neural_network.py",
        help="where to write it (default: neural_network.py)",
    )
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser(
        "grade",
        help="grade a submission under the lab's rules",
        description="Run a NeuralNetwork submission in a sandboxed process "
        "(NumPy and the standard library only, memory and time "
        "capped), check its contract, train it and test it on MNIST.",
    )
    p.add_argument("path", nargs="?", default=None, help="the submission (default: handgrad's own)")
    p.add_argument("--time-limit", type=positive_float, default=120.0, metavar="SECONDS")
    p.add_argument("--memory-mb", type=positive_int, default=2048)
    p.add_argument("--epochs", type=positive_int, default=8)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument(
        "--train-size",
        type=positive_int,
        default=None,
        help="train on a random subset of this many images (default: all 60000)",
    )
    p.add_argument(
        "--val-fraction",
        type=fraction,
        default=0.1,
        help="share of the training images held out for the per-epoch table, in [0, 1)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR")
    p.add_argument(
        "--min-accuracy",
        type=_accuracy,
        default=0.85,
        help="test accuracy needed to pass, in [0, 1] (default: 0.85)",
    )
    p.set_defaults(func=_cmd_grade)
