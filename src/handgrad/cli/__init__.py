"""The ``handgrad`` command line.

``handgrad train`` trains the reference network (784 -> 128 ReLU -> 10) on MNIST
from the copy shipped with the package and reports test accuracy; ``evaluate``,
``predict``, ``kaggle``, ``gradcheck`` and ``lab`` do what their help says.
Bad arguments or missing files end with exit code 2 and one line on stderr
(``HANDGRAD_DEBUG=1`` shows the traceback instead); training stopped by a
non-finite loss ends with exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from handgrad._argtypes import non_negative_int, positive_float
from handgrad._install import fix_hints, install_hint
from handgrad.cli._common import CommandError, one_line
from handgrad.cli.evaluation import cmd_evaluate, cmd_gradcheck, cmd_predict
from handgrad.cli.training import (
    TRAIN_EPILOG,
    add_checkpoint_options,
    add_training_options,
    cmd_kaggle,
    cmd_train,
)

__all__ = ["CommandError", "build_parser", "main"]

DESCRIPTION = """\
handgrad: neural networks from scratch in NumPy, every gradient derived by hand.

Start with `handgrad train`: it trains a 784-128-10 network on MNIST (shipped with
the package, no download) and prints the test accuracy, in well under a minute.
"""


EPILOG = """\
examples:
  handgrad train                               # the reference network, about 98%
  handgrad train --model cnn                   # a convolutional network, about 99.6%
  handgrad evaluate mnist-mlp.npz              # confusion matrix, per-class report
  handgrad predict mnist-mlp.npz my-digit.png  # a photo or drawing of one digit

'handgrad COMMAND --help' lists a command's options. Errors are one line on stderr
with exit code 2; set HANDGRAD_DEBUG=1 to see the Python traceback instead.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_download_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--download",
        action="store_true",
        help="if MNIST is not found, download it from public mirrors, checked by SHA-256, "
        "into the cache or --data-dir",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="handgrad",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from handgrad import __version__

    parser.add_argument("--version", action="version", version=f"handgrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "train",
        help="train a network on MNIST and report test accuracy",
        description="Train a network on MNIST (or any MNIST-format directory) and "
        "report test accuracy. Defaults: the reference 784-128-10 "
        "ReLU network, Adam with a one-cycle schedule, label smoothing 0.1, 15 epochs; "
        "--model lenet or cnn trains a convolutional network instead.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory with the four MNIST-format files (default: the shipped MNIST)",
    )
    _add_download_option(p)
    add_training_options(p)
    add_checkpoint_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", help="test accuracy, confusion matrix and report of a saved model"
    )
    p.add_argument("model", type=Path, help="a model saved by handgrad train")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory with the four MNIST-format files, of which the test pair is used "
        "(default: the shipped MNIST)",
    )
    _add_download_option(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify images of handwritten digits (PNG/JPG)")
    p.add_argument("model", type=Path, help="a model saved by handgrad train")
    p.add_argument("images", nargs="+", help="image files, one digit each")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "kaggle", help="train on the Kaggle digit-recognizer CSV, write a submission"
    )
    p.add_argument("train_csv", type=Path, help="train.csv (label,pixel0..pixel783)")
    p.add_argument("test_csv", type=Path, help="test.csv (pixel0..pixel783)")
    p.add_argument(
        "--submission",
        type=Path,
        default=Path("submission.csv"),
        help="where to write ImageId,Label (default: submission.csv)",
    )
    add_training_options(p, output="kaggle")
    p.set_defaults(func=cmd_kaggle)

    p = sub.add_parser("gradcheck", help="check every layer's backward against numeric gradients")
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the random inputs (default: 0)"
    )
    p.add_argument(
        "--threshold",
        type=positive_float,
        default=1e-6,
        help="largest relative error that passes (default: 1e-6)",
    )
    p.set_defaults(func=cmd_gradcheck)

    from handgrad.cli.explain import add_explain_parser

    add_explain_parser(sub)

    from handgrad.cli.lab import add_lab_parser

    add_lab_parser(sub)

    from handgrad.cli.study import add_study_parser

    add_study_parser(sub)

    from handgrad.cli.sweep import add_sweep_parser

    add_sweep_parser(sub)

    from handgrad.cli.export import add_export_parser

    add_export_parser(sub)
    return parser


def _error_message(exc: BaseException) -> str:
    """One line for an exception that ends a command."""
    from handgrad.data import DataError
    from handgrad.serialization import ModelFileError

    if isinstance(exc, (CommandError, DataError, ModelFileError, FileNotFoundError)):
        # written for the user already; an install hint names this copy's command
        return one_line(fix_hints(str(exc)))
    if isinstance(exc, MemoryError):
        # NumPy's message gives the array's size and shape; the innermost handgrad
        # frame of the traceback says what it was for: blame an option only then.
        import traceback

        hint = "the data, the model or --batch-size may be too large for this machine"
        for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
            module, name = frame.f_globals.get("__name__", ""), frame.f_code.co_name
            if module.startswith("handgrad.data"):
                hint = "while loading the data: is it the data you meant?"
            elif name == "_build_model" or (module == "handgrad.recipes" and "build" in name):
                hint = "while building the model: try smaller --hidden sizes"
            elif module == "handgrad.train":
                hint = "while training or predicting: try a smaller --batch-size"
            else:
                continue
            break
        text = f"out of memory{': ' + str(exc) if str(exc) else ''} ({hint})"
    elif isinstance(exc, ImportError):
        text = fix_hints(str(exc)) if "pip install" in str(exc) else f"{exc}: {install_hint('cli')}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return one_line(text) + " (HANDGRAD_DEBUG=1 shows the traceback)"


def _set_threads(threads: int | None, model: str) -> tuple[int | None, int]:
    """Set the threads of the run as ``handgrad.threads`` splits them
    (:func:`handgrad._threads.plan`); return what to restore: ``(BLAS threads or
    None, handgrad threads)``.

    An MLP's work is its matrix products, so its threads are BLAS's: ``threads``,
    else 1 unless the environment sets them. A convolutional network runs on
    handgrad's own threads, each taking chunks of the batch with BLAS on one
    thread: ``threads``, else every CPU this process may use.
    """
    from handgrad._blas import blas_threads, set_blas_threads
    from handgrad._parallel import get_num_threads, set_num_threads
    from handgrad._threads import plan

    blas, pool = plan(threads, convolutional=model != "mlp", keep_chosen=False)
    before = (None if blas is None else blas_threads(), get_num_threads())
    if blas is not None:
        set_blas_threads(blas)
    if pool is not None:
        set_num_threads(pool)
    return before


@contextlib.contextmanager
def _threads_chosen(given: bool) -> Iterator[None]:
    """``--threads`` given: the counts set for the command are the user's choice, which
    ``fit`` (in a study, a sweep, training) keeps instead of its default."""
    from handgrad import _threads

    before = dict(_threads._chosen)
    if given:
        _threads._chosen.update(blas=True, pool=True)
    try:
        yield
    finally:
        _threads._chosen.update(before)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    args.start_time = time.perf_counter()
    # train and kaggle choose by --model; the other commands with threads (study, explain)
    # run small dense products, as an MLP does
    network = args.model if args.command in ("train", "kaggle") else "mlp"
    restore = _set_threads(args.threads, network) if "threads" in args else None
    chosen = _threads_chosen(getattr(args, "threads", None) is not None)
    try:
        with chosen:
            return int(args.func(args))
    except (CommandError, ValueError, OSError, MemoryError, ImportError) as exc:
        # Anything else is a bug in handgrad and keeps its traceback.
        if os.environ.get("HANDGRAD_DEBUG", "") not in ("", "0"):
            raise
        print(f"handgrad {args.command}: error: {_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"handgrad {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if restore is not None:  # main() may be called in-process (tests, notebooks)
            from handgrad._blas import set_blas_threads
            from handgrad._parallel import set_num_threads

            if restore[0] is not None:
                set_blas_threads(restore[0])
            set_num_threads(restore[1])
