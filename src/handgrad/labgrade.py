"""``handgrad lab``: export the lab file, and grade a submission the way the lab does.

The grader treats the file as untrusted: it runs in a separate process
(:mod:`handgrad._labrunner`) whose address space is capped (2 GB by default),
where importing anything but NumPy and the standard library fails, and which
is killed when it runs past the time limit (120 s by default). The contract of
``NeuralNetwork`` is checked before training; a per-epoch table follows, then
the MNIST test accuracy, the time and the peak memory.
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from handgrad._argtypes import positive_float, positive_int

LAB_SOURCE = Path(__file__).with_name("lab.py")


@dataclass
class GradeResult:
    """What the grader saw: ``passed`` and, if not, the one-line ``reason``."""

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


def _reader(stream: IO[str], sink: queue.Queue[str | None]) -> None:
    for line in stream:
        sink.put(line)
    sink.put(None)


def _print_row(record: dict[str, Any], out: IO[str]) -> None:
    val_loss = f"{record['val_loss']:.4f}" if "val_loss" in record else "-"
    val_acc = f"{record['val_accuracy']:.2%}" if "val_accuracy" in record else "-"
    print(
        f"{record['epoch']:>5}  {record['train_loss']:>10.4f}  {val_loss:>8}  {val_acc:>7}  "
        f"{record['seconds']:>6.1f}",
        file=out,
        flush=True,
    )


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
    """Grade the submission at ``path``; print the table to ``out`` (None: silent)."""
    submission = Path(path)
    if not submission.is_file():
        raise FileNotFoundError(f"submission not found: {submission}")
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "handgrad._labrunner", json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    errors: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    threading.Thread(target=_reader, args=(proc.stderr, errors), daemon=True).start()
    result = GradeResult(passed=False)
    deadline = time.monotonic() + time_limit
    header_printed = False
    done: dict[str, Any] | None = None
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            proc.wait()
            result.reason = f"time limit exceeded: {time_limit:g} s"
            return result
        if line is None:
            break
        record = json.loads(line)
        event = record.pop("event")
        if event == "data" and out is not None:
            print(
                f"training on {record['train']} images, validating on {record['val']}, "
                f"testing on {record['test']}",
                file=out,
            )
        elif event == "epoch":
            result.epochs.append(record)
            if out is not None:
                if not header_printed:
                    print("epoch  train loss  val loss  val acc  seconds", file=out)
                    header_printed = True
                _print_row(record, out)
        elif event in ("rejected", "error"):
            result.reason = record["reason"]
        elif event == "done":
            done = record
    code = proc.wait()
    if done is None:
        if not result.reason:
            tail = []
            while not errors.empty():
                item = errors.get()
                if item:
                    tail.append(item.strip())
            killed = code < 0 or "MemoryError" in " ".join(tail)
            result.reason = (
                f"memory limit exceeded ({memory_mb} MB)"
                if killed
                else f"submission crashed (exit code {code}): {' '.join(tail[-2:])}"
            )
        return result
    result.test_accuracy = done["test_accuracy"]
    result.seconds = done["seconds"]
    result.peak_mb = done["peak_mb"]
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
        type=float,
        default=0.1,
        help="share of the training images held out for the per-epoch table",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR")
    p.add_argument("--min-accuracy", type=float, default=0.85)
    p.set_defaults(func=_cmd_grade)
