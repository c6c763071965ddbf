"""The ``handgrad`` command line.

``handgrad train`` trains the reference network (784 -> 128 ReLU -> 10) on MNIST
from the copy shipped with the package and reports test accuracy; ``evaluate``,
``predict``, ``kaggle``, ``gradcheck`` and ``lab`` do what their help says.
Bad arguments or missing files end with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from handgrad._argtypes import fraction, layer_sizes, positive_float, positive_int

DESCRIPTION = """\
handgrad: neural networks from scratch in NumPy, every gradient derived by hand.

Start with `handgrad train`: it trains a 784-128-10 network on MNIST (shipped with
the package, no download) and prints the test accuracy, in well under a minute.
"""


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


def _add_training_options(p: argparse.ArgumentParser) -> None:
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
    g.add_argument("--dropout", type=fraction, default=0.0, help="dropout after each hidden layer")
    g.add_argument(
        "--batch-norm", action="store_true", help="batch normalisation after each hidden Linear"
    )
    g.add_argument("--dtype", choices=["float32", "float64"], default="float32")
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
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument(
        "--schedule",
        choices=list(SCHEDULES),
        default="onecycle",
        help="learning-rate schedule (default: onecycle, stepped every batch)",
    )
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
        help="stop early when val_loss has not improved for this many epochs",
    )
    g.add_argument(
        "--time-limit",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="stop training cleanly before this many seconds",
    )
    g.add_argument("--seed", type=int, default=0, help="seed for weights, shuffling and splits")
    g = p.add_argument_group("output")
    g.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path("mnist-mlp.npz"),
        help="where to save the trained model (default: mnist-mlp.npz)",
    )
    g.add_argument("--no-save", action="store_true", help="do not save the model")
    g.add_argument(
        "--plots",
        type=Path,
        default=None,
        metavar="DIR",
        help="write training curves, confusion matrix, predictions, weights as PNGs",
    )
    g.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def _train(args: argparse.Namespace, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
    """Build, train and return ``(model, history)`` on ``(x, y)`` per the options."""
    from handgrad.callbacks import EarlyStopping, ProgressBar, TimeLimit
    from handgrad.data import train_val_split
    from handgrad.nn.losses import CrossEntropyLoss
    from handgrad.recipes import DEFAULT_LR, build_mlp, make_optimizer, make_scheduler
    from handgrad.train import fit

    rng = np.random.default_rng(args.seed)
    val = None
    if args.val_fraction > 0:
        x, y, x_val, y_val = train_val_split(x, y, args.val_fraction, rng)
        val = (x_val, y_val)
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
        callbacks.append(TimeLimit(args.time_limit))
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
    history = fit(
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
    if history.stop_reason and not args.quiet:
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
    from handgrad.data import load_mnist
    from handgrad.serialization import save
    from handgrad.train import predict

    start = time.perf_counter()
    data = load_mnist(args.data_dir)
    model, history = _train(args, data.x_train, data.y_train)
    train_seconds = time.perf_counter() - start
    y_pred = predict(model, data.x_test)
    test_acc = float(np.mean(y_pred == data.y_test))
    if not args.no_save:
        save(
            model,
            args.output,
            metadata={
                "history": history.history,
                "test_accuracy": test_acc,
                "command": sys.argv[1:],
            },
        )
    if args.plots is not None:
        for path in _write_plots(args.plots, model, history, data.x_test, data.y_test, y_pred):
            if not args.quiet:
                print(f"plot: {path}")
    wall = time.perf_counter() - start
    print(
        f"test accuracy {test_acc:.2%} ({int(np.sum(y_pred == data.y_test))}/{len(y_pred)})  "
        f"epochs {history.epochs}  train {train_seconds:.1f} s  wall {wall:.1f} s  "
        f"peak memory {_peak_memory_mb():.0f} MB"
        + ("" if args.no_save else f"  saved {args.output}"),
        flush=True,
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from handgrad.data import load_mnist
    from handgrad.metrics import accuracy, classification_report, confusion_matrix
    from handgrad.serialization import load
    from handgrad.train import predict

    model = load(args.model)
    data = load_mnist(args.data_dir)
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
    from handgrad.images import load_image, preprocess_digit
    from handgrad.serialization import load
    from handgrad.train import predict_proba

    model = load(args.model)
    for path in args.images:
        if not Path(path).is_file():
            raise CommandError(f"image not found: {path}")
        digit = preprocess_digit(load_image(path))
        probs = predict_proba(model, digit[None])[0]
        top = np.argsort(probs)[::-1][:3]
        alternatives = ", ".join(f"{k} {probs[k]:.1%}" for k in top[1:])
        print(f"{path}: {top[0]} ({probs[top[0]]:.1%}; then {alternatives})")
    return 0


def cmd_kaggle(args: argparse.Namespace) -> int:
    from handgrad.data import load_kaggle_csv, write_kaggle_submission
    from handgrad.serialization import save
    from handgrad.train import predict

    x, y = load_kaggle_csv(args.train_csv)
    if y is None:
        raise CommandError(f"{args.train_csv}: has no label column (is it the test file?)")
    x_test, _ = load_kaggle_csv(args.test_csv)
    model, _ = _train(args, x, y)
    labels = predict(model, x_test)
    write_kaggle_submission(args.submission, labels)
    if not args.no_save:
        save(model, args.output)
    print(f"wrote {len(labels)} predictions to {args.submission}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="handgrad",
        description=DESCRIPTION,
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
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory with the four MNIST-format files (default: the shipped MNIST)",
    )
    _add_training_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", help="test accuracy, confusion matrix and report of a saved model"
    )
    p.add_argument("model", type=Path, help="a model saved by handgrad train")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR")
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
    _add_training_options(p)
    p.set_defaults(func=cmd_kaggle)

    p = sub.add_parser("gradcheck", help="check every layer's backward against numeric gradients")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=positive_float, default=1e-6)
    p.set_defaults(func=cmd_gradcheck)

    from handgrad.labgrade import add_lab_parser

    add_lab_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    from handgrad.data import DataError
    from handgrad.serialization import ModelFileError

    try:
        return int(args.func(args))
    except (CommandError, DataError, ModelFileError, FileNotFoundError) as exc:
        print(f"handgrad {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"handgrad {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
