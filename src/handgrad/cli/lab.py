"""``handgrad lab``: start, export, check and grade the "MNIST from scratch" lab file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from handgrad._argtypes import _number, fraction, non_negative_int, positive_float, positive_int
from handgrad.cli._common import CommandError
from handgrad.lab.handout import ANSWER_SOURCE, DEFAULT_NAME, export_lab, start_lab


def _write(write: Any, args: argparse.Namespace) -> Path:
    try:
        return write(args.path, force=args.force)
    except FileExistsError as exc:
        target = str(exc).split(" already exists")[0]
        raise CommandError(f"{target} already exists; --force overwrites it") from None


def _cmd_start(args: argparse.Namespace) -> int:
    path = _write(start_lab, args)
    print(f"wrote {path}: fill in its TODOs, then run 'handgrad lab check {path}'")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    path = _write(export_lab, args)
    print(f"wrote {path} (NumPy only; paste it into the lab's editor)")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from handgrad.lab.checker import check

    result = check(args.path, time_limit=args.time_limit, memory_mb=args.memory_mb)
    print(result.report())
    return 0 if result.clean else 1


def _cmd_grade(args: argparse.Namespace) -> int:
    from handgrad.lab.grader import grade

    path = Path(args.path) if args.path else ANSWER_SOURCE
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
        threads=args.threads,
        out=sys.stdout,
    )
    if result.test_accuracy is not None:
        print(
            f"test accuracy {result.test_accuracy:.2%}  time {result.seconds:.1f} s  "
            f"peak memory {result.peak_mb:.0f} MB"
        )
    if not result.passed:
        print(f"FAILED: {result.reason}")
        print(f"'handgrad lab check {path}' names the usual bugs in a few seconds")
        return 1
    print(
        f"PASSED (>= {args.min_accuracy:.0%} within {args.time_limit:g} s and {args.memory_mb} MB)"
    )
    return 0


_accuracy = _number(float, lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")


def _add_file_parser(sub: Any, name: str, help: str, func: Any) -> None:
    p = sub.add_parser(name, help=help)
    p.add_argument(
        "path", nargs="?", default=DEFAULT_NAME, help=f"where to write it (default: {DEFAULT_NAME})"
    )
    p.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    p.set_defaults(func=func)


def add_lab_parser(subparsers: Any) -> None:
    """Add ``lab start``, ``export``, ``check`` and ``grade`` to the ``handgrad`` command line."""
    lab = subparsers.add_parser(
        "lab", help="the 'MNIST from scratch' lab: start it, check it, grade it"
    )
    sub = lab.add_subparsers(
        dest="lab_command", metavar="COMMAND", required=True, parser_class=type(lab)
    )
    _add_file_parser(sub, "start", "write the starter file: the contract and TODOs", _cmd_start)
    _add_file_parser(sub, "export", "write handgrad's answer, the finished file", _cmd_export)
    p = sub.add_parser(
        "check",
        help="name the usual bugs in a lab file, in seconds",
        description="Run a NeuralNetwork file in a child process under the grader's "
        "import rules and limits (NumPy and the standard library only; memory and time "
        "capped) on a batch of 16 images, compare its steps with the numeric gradient of "
        "its own forward pass, and name the usual bugs. Exit 0 when it finds none, 1 when "
        "it does. The child is not isolated, even as root: the file runs as you, can read "
        "your files and signal this process; a guard against honest mistakes, not against "
        "hostile code.",
    )
    p.add_argument("path", help="the lab file to check")
    p.add_argument(
        "--time-limit",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="stop the file after this long (default: 30)",
    )
    p.add_argument(
        "--memory-mb", type=positive_int, default=2048, help="its memory cap (default: 2048)"
    )
    p.set_defaults(func=_cmd_check)
    p = sub.add_parser(
        "grade",
        help="grade a submission under the lab's rules",
        description="Run a NeuralNetwork submission in a child process (NumPy and the "
        "standard library only; time, and the memory of all its processes, capped), check "
        "its contract, train it and test it on MNIST; the grade rests only on predictions "
        "this process checks and scores. Run as root on Linux, the child gets a user id "
        "and a mount namespace of its own: it cannot signal the grader, nor read the "
        "MNIST files where the grader looks for them or in the git checkout it is run "
        "from or installed in (a copy elsewhere that anyone may read stays readable). "
        "Otherwise it runs as you: a guard against honest mistakes, not against a "
        "submission that sets out to cheat (it can read the test labels and image files, "
        "or stop the grader). See docs/lab.md, 'The grader'.",
    )
    p.add_argument("path", nargs="?", default=None, help="the submission (default: handgrad's own)")
    p.add_argument(
        "--time-limit",
        type=positive_float,
        default=120.0,
        metavar="SECONDS",
        help="wall-clock seconds the submission's process may run (default: 120)",
    )
    p.add_argument(
        "--memory-mb",
        type=positive_int,
        default=2048,
        help="memory all the submission's processes may hold together (default: 2048)",
    )
    p.add_argument(
        "--epochs", type=positive_int, default=8, help="epochs the grader trains (default: 8)"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="samples per training step the grader asks for (default: 64)",
    )
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
        help="share of the training images held out for the per-epoch table, in [0, 1) "
        "(default: 0.1)",
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the training subset and the validation split (default: 0)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the MNIST files (default: $HANDGRAD_DATA, the shipped copy, or the cache)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="BLAS threads of the submission's NumPy, set in its environment whatever "
        "yours says (default: 1, so a time limit means the same on every machine)",
    )
    p.add_argument(
        "--min-accuracy",
        type=_accuracy,
        default=0.85,
        help="test accuracy needed to pass, in [0, 1] (default: 0.85)",
    )
    p.set_defaults(func=_cmd_grade)
