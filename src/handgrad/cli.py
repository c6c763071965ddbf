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
import importlib
import math
import os
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from handgrad._argtypes import (
    fraction,
    layer_sizes,
    non_negative_float,
    non_negative_int,
    output_dir_problem,
    output_file_problem,
    positive_float,
    positive_int,
)

DESCRIPTION = """\
handgrad: neural networks from scratch in NumPy, every gradient derived by hand.

Start with `handgrad train`: it trains a 784-128-10 network on MNIST (shipped with
the package, no download) and prints the test accuracy, in well under a minute.
"""

EPILOG = """\
examples:
  handgrad train                               # the reference network, about 98%
  handgrad train --hidden 256,128 --plots plots/
  handgrad evaluate mnist-mlp.npz              # confusion matrix, per-class report
  handgrad predict mnist-mlp.npz my-digit.png  # a photo or drawing of one digit

'handgrad COMMAND --help' lists a command's options. Errors are one line on stderr
with exit code 2; set HANDGRAD_DEBUG=1 to see the Python traceback instead.
"""

TRAIN_EPILOG = """\
examples:
  handgrad train --epochs 3 --quiet             # a quick run
  handgrad train --hidden 512,256 --dropout 0.2 --output big.npz
  handgrad train --optimizer sgd --schedule cosine --lr 0.1
  handgrad train --data-dir ~/fashion-mnist --plots plots/

Set HANDGRAD_DEBUG=1 to see the Python traceback of an error.
"""

SCHEDULE_HELP = (
    "learning-rate schedule (default: onecycle). onecycle: warm up to --lr, then anneal, "
    "every batch; cosine: from --lr down to 0 along a cosine, every batch; step: x0.1 "
    "every third of the epochs; constant: --lr throughout"
)

_INSTALL_HINT = 'pip install "handgrad[cli]"'
# Seconds kept free under --time-limit for the work after training: predicting the
# test set and saving take well under 0.2 s for the reference network, plots ~2 s.
AFTER_TRAINING_SECONDS = 0.5
PLOT_SECONDS = 3.0
#: The sentence of handgrad.data's "where to put MNIST" hint meant for library users.
_LIBRARY_DOWNLOAD_HINT = ", or call load_mnist(download=True) to fetch them."


_XY = tuple[np.ndarray, np.ndarray]  # (samples, labels)


class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- shared pieces ----------------------------------------------------------------------


def _peak_memory_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _one_line(message: str) -> str:
    """Join a multi-line message (a heading and "  - item" lines) into one line."""
    out = ""
    for raw in message.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("- "):
            line, sep = line[2:], " " if out.endswith(":") else "; "
        else:
            sep = " " if out.endswith((".", ":")) else ". "
        out = out + sep + line if out else line
    return out


def _require(module: str, package: str, purpose: str) -> None:
    """Fail now, before any work, if an optional package is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise CommandError(
            f"{purpose} needs {package}, which is not installed: {_INSTALL_HINT}"
        ) from None


def _check_output_file(path: Path, option: str) -> None:
    problem = output_file_problem(path)
    if problem:
        raise CommandError(f"{option} {path}: {problem}")


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse unwritable output paths and missing packages before training, not after."""
    if not args.no_save:
        _check_output_file(args.output, "--output")
    if args.plots is not None:
        problem = output_dir_problem(args.plots)
        if problem:
            raise CommandError(f"--plots {args.plots}: {problem}")
        _require("matplotlib", "matplotlib", "--plots")


def _load_mnist(args: argparse.Namespace) -> Any:
    from handgrad.data import DataError, load_mnist

    try:
        return load_mnist(args.data_dir, download=args.download)
    except DataError as exc:
        # The library's hint names its own API; on the command line the option is --download,
        # and after a failed download, suggesting it again would not help.
        hint = "." if args.download else ", or run again with --download to fetch them."
        raise DataError(str(exc).replace(_LIBRARY_DOWNLOAD_HINT, hint)) from exc


def _features(n: int, shape: tuple[int, ...] | None = None) -> str:
    """``784 input features (28x28 images)``: the images part when it is known or square."""
    side = math.isqrt(n)
    if shape is None and side * side == n:
        shape = (side, side)
    images = f" ({'x'.join(map(str, shape))} images)" if shape and len(shape) == 2 else ""
    return f"{n} input features{images}"


def _check_input_size(model: Any, shape: tuple[int, ...], what: str) -> None:
    """One clear line instead of a shape error deep in ``Linear.forward``."""
    from handgrad.nn.layers import Linear

    first = next((m for m in model.modules() if isinstance(m, Linear)), None)
    n = int(np.prod(shape))
    if first is not None and first.in_features != n:
        raise CommandError(
            f"the model expects {_features(first.in_features)}, {what} {_features(n, shape)}"
        )


def _add_training_options(p: argparse.ArgumentParser, output: str = "mnist-mlp.npz") -> None:
    from handgrad.recipes import ACTIVATIONS, OPTIMIZERS, SCHEDULES

    g = p.add_argument_group("model")
    g.add_argument(
        "--hidden",
        type=layer_sizes,
        default=[128],
        metavar="SIZES",
        help="hidden layer sizes, comma-separated (default: 128)",
    )
    g.add_argument(
        "--activation",
        choices=sorted(ACTIVATIONS),
        default="relu",
        help="hidden activation (default: relu)",
    )
    g.add_argument(
        "--dropout",
        type=fraction,
        default=0.0,
        help="dropout probability after each hidden layer (default: 0, none)",
    )
    g.add_argument(
        "--batch-norm",
        action="store_true",
        help="batch normalisation after each hidden Linear",
    )
    g.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default="float32",
        help="floating-point type of weights and computation (default: float32)",
    )
    g = p.add_argument_group("training")
    g.add_argument(
        "--optimizer",
        choices=sorted(OPTIMIZERS),
        default="adam",
        help="default: adam (sgd means SGD with Nesterov momentum 0.9)",
    )
    g.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="(peak) learning rate (default: 0.005 for adam/adamw, 0.2 for sgd, ...)",
    )
    g.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=0.0,
        help="weight decay, e.g. 1e-4 (default: 0, none; decoupled for adamw and lion)",
    )
    g.add_argument("--schedule", choices=list(SCHEDULES), default="onecycle", help=SCHEDULE_HELP)
    g.add_argument(
        "--epochs", type=positive_int, default=15, help="passes over the data (default: 15)"
    )
    g.add_argument("--batch-size", type=positive_int, default=128, help="default: 128")
    g.add_argument(
        "--label-smoothing",
        type=fraction,
        default=0.1,
        help="cross-entropy label smoothing (default: 0.1; 0 = none)",
    )
    g.add_argument(
        "--val-fraction",
        type=fraction,
        default=0.1,
        help="share of training data held out for validation (default: 0.1; 0 = none)",
    )
    g.add_argument(
        "--patience",
        type=positive_int,
        default=None,
        help="stop early when val_loss has not improved for this many epochs (default: off)",
    )
    g.add_argument(
        "--time-limit",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="finish the whole command inside this many seconds, stopping training "
        "early if needed (default: no limit)",
    )
    g.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="threads for NumPy's matrix products (default: 1, unless OPENBLAS_NUM_THREADS "
        "or OMP_NUM_THREADS is set; a 128-sample batch gains nothing from a second thread, "
        "and threads slow to a crawl when another program is busy)",
    )
    g.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed for weights, shuffling and splits (default: 0)",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path(output),
        help=f"where to save the trained model (default: {output})",
    )
    g.add_argument("--no-save", action="store_true", help="do not save the model")
    g.add_argument(
        "--plots",
        type=Path,
        default=None,
        metavar="DIR",
        help="write training curves, confusion matrix, predictions, weights as PNGs "
        "into DIR (default: no plots)",
    )
    g.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def _split(
    args: argparse.Namespace, x: np.ndarray, y: np.ndarray
) -> tuple[np.random.Generator, _XY, _XY | None]:
    """``(rng, train, val)``: the seeded generator and the held-out split (copies)."""
    from handgrad.data import train_val_split

    rng = np.random.default_rng(args.seed)
    if args.val_fraction <= 0:
        return rng, (x, y), None
    x_train, y_train, x_val, y_val = train_val_split(x, y, args.val_fraction, rng)
    return rng, (x_train, y_train), (x_val, y_val)


def _diverged(history: Any) -> bool:
    return bool(history.stop_reason) and history.stop_reason.startswith("non-finite")


def _fit_quietly(*fit_args: Any, **fit_kwargs: Any) -> Any:
    """``fit``, with its non-finite-loss warning and NumPy's overflow noise left to the caller.

    The warnings of a run that diverged are dropped (the caller prints one line from
    ``history.stop_reason``); any other warning is shown once, as usual.
    """
    from handgrad.train import fit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(*fit_args, **fit_kwargs)
    shown = set()
    for w in caught:
        key = (w.category, str(w.message), w.filename, w.lineno)
        if key in shown or (_diverged(history) and issubclass(w.category, RuntimeWarning)):
            continue
        shown.add(key)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return history


def _train(
    args: argparse.Namespace, rng: np.random.Generator, train: _XY, val: _XY | None
) -> tuple[Any, Any]:
    """Build, train and return ``(model, history)`` per the options; see :func:`_split`."""
    from handgrad.callbacks import EarlyStopping, ProgressBar, TimeLimit
    from handgrad.nn.losses import CrossEntropyLoss
    from handgrad.recipes import DEFAULT_LR, build_mlp, make_optimizer, make_scheduler

    x, y = train
    if len(x) == 0:
        raise CommandError("no training samples left (lower --val-fraction?)")
    num_classes = int(y.max()) + 1
    model = build_mlp(
        int(np.prod(x.shape[1:])),
        args.hidden,
        num_classes,
        activation=args.activation,
        dropout=args.dropout,
        batch_norm=args.batch_norm,
        rng=rng,
        dtype=np.dtype(args.dtype),
    )
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    optimizer = make_optimizer(args.optimizer, model, lr, args.weight_decay)
    steps = -(-len(x) // args.batch_size)
    scheduler, interval = make_scheduler(
        args.schedule, optimizer, lr=lr, epochs=args.epochs, steps_per_epoch=steps
    )
    callbacks: list[Any] = [ProgressBar(quiet=args.quiet)]
    if args.time_limit:
        # The limit is for the whole command: counted from its start, with room kept
        # for testing and saving afterwards (and for matplotlib, when plotting).
        margin = AFTER_TRAINING_SECONDS + (PLOT_SECONDS if args.plots else 0.0)
        callbacks.append(TimeLimit(args.time_limit, margin=margin, start=args.start_time))
    if args.patience:
        if val is None:
            raise CommandError("--patience needs validation data: set --val-fraction above 0")
        callbacks.append(EarlyStopping(patience=args.patience, restore_best_weights=True))
    if not args.quiet:
        print(
            f"model: {len(args.hidden)} hidden layer(s) {args.hidden}, {args.activation}, "
            f"{model.num_parameters():,} parameters; {args.optimizer} lr {lr:g}, "
            f"{args.schedule} schedule; {args.epochs} epochs of {len(x):,} samples, "
            f"batch {args.batch_size}",
            flush=True,
        )
    history = _fit_quietly(
        model,
        CrossEntropyLoss(label_smoothing=args.label_smoothing),
        optimizer,
        (x, y),
        val,
        epochs=args.epochs,
        batch_size=args.batch_size,
        rng=rng,
        scheduler=scheduler,
        scheduler_interval=interval,
        callbacks=callbacks,
    )
    if _diverged(history):
        reason = history.stop_reason
        if "learning rate" not in reason:
            reason += " (try a lower learning rate)"
        print(f"handgrad {args.command}: training stopped: {reason}", file=sys.stderr, flush=True)
    elif history.stop_reason and not args.quiet:
        print(history.stop_reason, flush=True)
    return model, history


def _write_plots(
    directory: Path,
    model: Any,
    history: Any,
    x_test: np.ndarray,
    y_test: np.ndarray,
    y_pred: np.ndarray,
) -> list[Path]:
    from handgrad import plots
    from handgrad.metrics import confusion_matrix
    from handgrad.nn.layers import Linear

    written = [plots.plot_history(history.history, directory / "training_curves.png")]
    cm = confusion_matrix(y_test, y_pred, num_classes=int(max(y_test.max(), y_pred.max())) + 1)
    written.append(plots.plot_confusion_matrix(cm, directory / "confusion_matrix.png"))
    wrong = np.flatnonzero(y_pred != y_test)[:8]
    right = np.flatnonzero(y_pred == y_test)[: 32 - len(wrong)]
    pick = np.sort(np.concatenate([wrong, right]))
    written.append(
        plots.plot_predictions(
            x_test[pick], y_test[pick], y_pred[pick], directory / "predictions.png"
        )
    )
    first = next((m for m in model.modules() if isinstance(m, Linear)), None)
    if first is not None and first.in_features == 784:
        written.append(
            plots.plot_first_layer(first.weight.data, directory / "first_layer_weights.png")
        )
    return written


# -- commands ----------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from handgrad.serialization import save
    from handgrad.train import predict

    _check_outputs(args)
    start = time.perf_counter()
    data = _load_mnist(args)
    x_test, y_test = data.x_test, data.y_test
    rng, train, val = _split(args, data.x_train, data.y_train)
    del data  # the unsplit training set (47 MB of MNIST): only the split copies are used
    model, history = _train(args, rng, train, val)
    del train, val
    train_seconds = time.perf_counter() - start
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged model may overflow
        y_pred = predict(model, x_test)
    test_acc = float(np.mean(y_pred == y_test))
    if not args.no_save:
        save(
            model,
            args.output,
            metadata={
                "history": history.history,
                "test_accuracy": test_acc,
                "command": sys.argv[1:],
                "stop_reason": history.stop_reason,
            },
        )
    if args.plots is not None:
        for path in _write_plots(args.plots, model, history, x_test, y_test, y_pred):
            if not args.quiet:
                print(f"plot: {path}")
    wall = time.perf_counter() - start
    print(
        f"test accuracy {test_acc:.2%} ({int(np.sum(y_pred == y_test))}/{len(y_pred)})  "
        f"epochs {history.epochs}  train {train_seconds:.1f} s  wall {wall:.1f} s  "
        f"peak memory {_peak_memory_mb():.0f} MB"
        + ("" if args.no_save else f"  saved {args.output}"),
        flush=True,
    )
    return 1 if _diverged(history) else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from handgrad.metrics import accuracy, classification_report, confusion_matrix
    from handgrad.serialization import load
    from handgrad.train import predict

    model = load(args.model)
    data = _load_mnist(args)
    _check_input_size(model, data.x_test.shape[1:], "the data has")
    y_pred = predict(model, data.x_test)
    print(f"test accuracy {accuracy(data.y_test, y_pred):.2%} on {len(y_pred)} images")
    cm = confusion_matrix(data.y_test, y_pred, num_classes=10)
    print("\nconfusion matrix (rows: true, columns: predicted)")
    print("      " + " ".join(f"{j:>5d}" for j in range(cm.shape[1])))
    for i, row in enumerate(cm):
        print(f"{i:>5d} " + " ".join(f"{v:>5d}" for v in row))
    print()
    print(classification_report(data.y_test, y_pred, num_classes=10))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from handgrad.images import ImageError, load_image, preprocess_digit
    from handgrad.serialization import load
    from handgrad.train import predict_proba

    _require("PIL", "Pillow", "reading images")
    model = load(args.model)
    _check_input_size(model, (28, 28), "but predict makes MNIST-style images with")
    for path in args.images:
        if not Path(path).is_file():
            raise CommandError(f"image not found: {path}")
        try:
            digit = preprocess_digit(load_image(path))
        except ImageError as exc:
            raise CommandError(str(exc) if path in str(exc) else f"{path}: {exc}") from exc
        probs = predict_proba(model, digit[None])[0]
        top = np.argsort(probs)[::-1][:3]
        alternatives = ", ".join(f"{k} {probs[k]:.1%}" for k in top[1:])
        print(f"{path}: {top[0]} ({probs[top[0]]:.1%}; then {alternatives})")
    return 0


def cmd_kaggle(args: argparse.Namespace) -> int:
    from handgrad.data import load_kaggle_csv, write_kaggle_submission
    from handgrad.serialization import save
    from handgrad.train import predict

    _check_outputs(args)
    _check_output_file(args.submission, "--submission")
    x, y = load_kaggle_csv(args.train_csv)
    if y is None:
        raise CommandError(f"{args.train_csv}: has no label column (is it the test file?)")
    x_test, y_test = load_kaggle_csv(args.test_csv)
    if y_test is not None:
        raise CommandError(
            f"{args.test_csv}: has a label column, so it looks like the training file; "
            "give the test file (pixel0,...,pixel783 only) as the second argument"
        )
    if x_test.shape[1:] != x.shape[1:]:
        raise CommandError(
            f"{args.test_csv} has {x_test.shape[1]} pixel columns but {args.train_csv} has "
            f"{x.shape[1]}"
        )
    rng, train, val = _split(args, x, y)
    del x, y
    model, history = _train(args, rng, train, val)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged model may overflow
        labels = predict(model, x_test)
    write_kaggle_submission(args.submission, labels)
    if not args.no_save:
        save(model, args.output)
    print(f"wrote {len(labels)} predictions to {args.submission}")
    return 1 if _diverged(history) else 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from handgrad.selfcheck import run_selfcheck

    rows = run_selfcheck(seed=args.seed)
    width = max(len(name) for name, _, _ in rows)
    print(f"{'case':<{width}}  {'max relative error':>18}  result")
    failed = 0
    for name, error, tensor in rows:
        ok = error < args.threshold
        failed += not ok
        print(f"{name:<{width}}  {error:>18.2e}  {'ok' if ok else 'FAIL'} ({tensor})")
    print(
        f"{len(rows) - failed} passed, {failed} failed (float64 central differences, "
        f"threshold {args.threshold:g})"
    )
    return 1 if failed else 0


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
        description="Train an MLP on MNIST (or any MNIST-format directory) and "
        "report test accuracy. Defaults: the reference 784-128-10 "
        "ReLU network, Adam with a one-cycle schedule, label smoothing 0.1, 15 epochs.",
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
    _add_training_options(p)
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
    _add_training_options(p, output="kaggle-mlp.npz")
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

    from handgrad.labgrade import add_lab_parser

    add_lab_parser(sub)
    return parser


def _error_message(exc: BaseException) -> str:
    """One line for an exception that ends a command."""
    from handgrad.data import DataError
    from handgrad.serialization import ModelFileError

    if isinstance(exc, (CommandError, DataError, ModelFileError, FileNotFoundError)):
        return _one_line(str(exc))  # written for the user already
    if isinstance(exc, MemoryError):
        text = f"out of memory{': ' + str(exc) if str(exc) else ''} (try smaller --hidden sizes)"
    elif isinstance(exc, ImportError):
        text = str(exc) if "pip install" in str(exc) else f"{exc}: {_INSTALL_HINT}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return _one_line(text) + " (HANDGRAD_DEBUG=1 shows the traceback)"


def _set_threads(threads: int | None) -> int | None:
    """Pin NumPy's BLAS threads to ``threads``, else to 1 unless the environment sets
    them; return the count before, to restore (None: unknown or unchanged)."""
    from handgrad._blas import blas_threads, set_blas_threads

    if threads is None:
        if any(os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")):
            return None
        threads = 1
    before = blas_threads()
    set_blas_threads(threads)
    return before


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    args.start_time = time.perf_counter()
    threads_before = _set_threads(args.threads) if "threads" in args else None
    try:
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
        if threads_before is not None:  # main() may be called in-process (tests, notebooks)
            from handgrad._blas import set_blas_threads

            set_blas_threads(threads_before)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
