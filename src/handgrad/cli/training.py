"""``handgrad train`` and ``handgrad kaggle``: build an MLP from the options, train it,
test it, save it, plot it."""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from handgrad._argtypes import (
    fraction,
    layer_sizes,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from handgrad.cli._common import (
    XY,
    CommandError,
    batch_size_warning,
    check_output_file,
    check_outputs,
    eval_batch,
    linear_layers,
    load_mnist_for,
    output_classes,
    peak_memory_mb,
)

TRAIN_EPILOG = """\
examples:
  handgrad train --epochs 3 --quiet             # a quick run
  handgrad train --model lenet --epochs 3       # the course's convolutional network
  handgrad train --model cnn                    # the best recipe: about 99.6%
  handgrad train --hidden 512,256 --dropout 0.2 --output big.npz
  handgrad train --data-dir ~/fashion-mnist --plots plots/

Set HANDGRAD_DEBUG=1 to see the Python traceback of an error.
"""


SCHEDULE_HELP = (
    "learning-rate schedule (default: onecycle). onecycle: warm up to --lr, then anneal, "
    "every batch; cosine: from --lr down to 0 along a cosine, every batch; step: x0.1 "
    "every third of the epochs; constant: --lr throughout"
)


# Seconds kept free under --time-limit for the work after training: predicting the
# test set and saving take well under 0.2 s for the reference network, plots ~2 s.
AFTER_TRAINING_SECONDS = 0.5


PLOT_SECONDS = 3.0


def add_training_options(p: argparse.ArgumentParser, output: str = "mnist") -> None:
    from handgrad.recipes import ACTIVATIONS, MODELS, OPTIMIZERS, SCHEDULES

    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        choices=MODELS,
        default="mlp",
        help="mlp: the fully connected network of --hidden (default); lenet: conv 32 3x3, "
        "pool, conv 64 3x3, pool, fc 128, fc 10 (the course's CNN); cnn: the best recipe "
        "(three convolutions with batch norm, trained with augmentation)",
    )
    g.add_argument(
        "--hidden",
        type=layer_sizes,
        default=None,
        metavar="SIZES",
        help="mlp only: hidden layer sizes, comma-separated (default: 128)",
    )
    g.add_argument(
        "--activation",
        choices=sorted(ACTIVATIONS),
        default=None,
        help="mlp only: hidden activation (default: relu)",
    )
    g.add_argument(
        "--dropout",
        type=fraction,
        default=None,
        help="mlp only: dropout probability after each hidden layer (default: 0, none)",
    )
    g.add_argument(
        "--batch-norm",
        action="store_true",
        default=None,
        help="mlp only: batch normalisation after each hidden Linear",
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
        help="(peak) learning rate (default: 0.005 for adam/adamw with mlp, 0.003 with "
        "lenet and cnn, 0.2 for sgd, ...)",
    )
    g.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=0.0,
        help="weight decay, e.g. 1e-4 (default: 0, none; decoupled for adamw and lion)",
    )
    g.add_argument("--schedule", choices=list(SCHEDULES), default="onecycle", help=SCHEDULE_HELP)
    g.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="passes over the data (default: 15 for mlp, 10 for lenet, 20 for cnn)",
    )
    g.add_argument("--batch-size", type=positive_int, default=128, help="default: 128")
    g.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="randomly shift (up to 2 pixels), rotate (up to 10 degrees) and scale "
        "(0.9-1.1) every training image, afresh each epoch (default: on for cnn, "
        "off for mlp and lenet)",
    )
    g.add_argument(
        "--label-smoothing",
        type=fraction,
        default=0.1,
        help="cross-entropy label smoothing (default: 0.1; 0 = none)",
    )
    g.add_argument(
        "--val-fraction",
        type=fraction,
        default=None,
        help="share of training data held out for validation (default: 0.1; 0 for cnn, "
        "which trains on all of it; 0 = none)",
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
        help="mlp: threads for NumPy's matrix products (default: 1, unless "
        "OPENBLAS_NUM_THREADS or OMP_NUM_THREADS is set; a 128-sample batch gains little from "
        "a second thread, and threads slow to a crawl when another program is busy). lenet, "
        "cnn: handgrad's own threads, each taking part of every batch (default: every CPU)",
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
        default=None,
        help=f"where to save the trained model (default: {output}-mlp.npz, or "
        f"{output}-lenet.npz / {output}-cnn.npz with --model)",
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


def add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("interruption and resume")
    g.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="PATH",
        help="write a checkpoint (model, optimizer, schedule, generators, history) to PATH "
        "after every epoch and when interrupted (default: only when interrupted, beside "
        "--output as NAME-checkpoint.npz)",
    )
    g.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="PATH",
        help="continue the run of a checkpoint with its settings: the weights end bit for "
        "bit as an uninterrupted run's with the same threads (default: a new run)",
    )


# The options that decide the run's numbers: a resumed run takes them from its checkpoint.
RUN_OPTIONS = (
    "model", "hidden", "activation", "dropout", "batch_norm", "dtype", "optimizer", "lr",
    "weight_decay", "schedule", "epochs", "batch_size", "augment", "label_smoothing",
    "val_fraction", "patience", "seed", "data_dir",
)  # fmt: skip
# The options a resumed run may set afresh (shown again in the command that resumes).
RESUME_OPTIONS = ("output", "no_save", "plots", "quiet", "checkpoint", "time_limit")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _data_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for a in (x, y):
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).data)
    return digest.hexdigest()


def _run_settings(args: argparse.Namespace, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from handgrad._blas import blas_threads
    from handgrad._parallel import get_num_threads

    return {
        "options": {k: _plain(getattr(args, k)) for k in RUN_OPTIONS},
        "data": _data_fingerprint(x, y),
        "blas_threads": blas_threads(),
        "threads": get_num_threads(),
    }


def apply_checkpoint_settings(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    """Take the run's options from its checkpoint; refuse ones given that differ."""
    from handgrad.cli import build_parser

    saved = settings.get("options")
    if not isinstance(saved, dict) or set(saved) != set(RUN_OPTIONS):
        raise CommandError(f"{args.resume}: not a checkpoint of handgrad train (no settings)")
    defaults = build_parser().parse_args(["train"])
    for key in RUN_OPTIONS:
        given = getattr(args, key)
        if given is not None and given != getattr(defaults, key) and _plain(given) != saved[key]:
            flag = "--" + key.replace("_", "-")
            theirs = "the default" if saved[key] is None else saved[key]
            raise CommandError(
                f"{flag} {_plain(given)} differs from the checkpoint's ({theirs}): a "
                f"resumed run keeps its settings (start a new run to change {flag})"
            )
        value = saved[key]
        if key == "data_dir" and value is not None:
            value = Path(value)
        setattr(args, key, value)


class _StopOnSignal:
    """SIGINT and SIGTERM during training pause the run at the end of the current step
    (a second one stops at once); the handlers in place before come back after."""

    def __init__(self) -> None:
        from handgrad.callbacks import Callback

        self.signum: int | None = None
        self.callback = Callback()  # fit hands it the trainer to interrupt
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        if self.signum is not None:  # asked twice: do not wait for the step
            raise KeyboardInterrupt
        self.signum = signum
        trainer = getattr(self.callback, "trainer", None)
        if trainer is not None:
            trainer.interrupt(f"interrupted by {signal.Signals(signum).name}")

    def __enter__(self) -> _StopOnSignal:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _split(
    args: argparse.Namespace, x: np.ndarray, y: np.ndarray
) -> tuple[np.random.Generator, XY, XY | None]:
    """``(rng, train, val)``: the seeded generator and the held-out split (copies)."""
    from handgrad.data import train_val_split

    rng = np.random.default_rng(args.seed)
    if args.val_fraction <= 0:
        return rng, (x, y), None
    x_train, y_train, x_val, y_val = train_val_split(x, y, args.val_fraction, rng)
    return rng, (x_train, y_train), (x_val, y_val)


def interrupted(history: Any) -> bool:
    return bool(history.stop_reason) and history.stop_reason.startswith("interrupted")


#: What a failed run's message blames unless something else is known to be wrong.
LIKELY_CAUSE = "the learning rate is likely far too high"


def failure(
    history: Any,
    test_accuracy: float,
    test_size: int,
    num_classes: int,
    cause: str = LIKELY_CAUSE,
) -> str | None:
    """Why a finished run is no good, or None: its loss became non-finite, it ends
    no better than chance (judged on at least 10 test samples a class), or its loss
    ended far above where every run starts (the uniform guess, ln C). ``cause``: the
    likely reason, said after the finding."""
    if diverged(history):
        return str(history.stop_reason)
    chance = 1.0 / max(num_classes, 2)
    if test_size >= 10 * num_classes and test_accuracy <= 1.5 * chance:
        return (
            f"test accuracy {test_accuracy:.2%} is chance level (1 in {num_classes}: "
            f"{chance:.0%}); {cause}"
        )
    last = history.history.get("loss", [math.nan])[-1]
    if last > 2 * math.log(max(num_classes, 2)):
        return (
            f"the training loss ended at {last:.4g}, far above the {math.log(num_classes):.3f} "
            f"of a uniform guess where training starts; {cause}"
        )
    return None


def diverged(history: Any) -> bool:
    return bool(history.diverged)


def _fit_quietly(*fit_args: Any, **fit_kwargs: Any) -> Any:
    """``fit`` without its non-finite-loss warning: the caller prints ``history.stop_reason``
    as one line. (``fit`` already keeps NumPy's overflow noise inside the step.)"""
    from handgrad.train import fit

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="non-finite ", category=RuntimeWarning)
        return fit(*fit_args, **fit_kwargs)


def _testing_seconds(model: Any, x: np.ndarray, test_size: int) -> float:
    """A generous estimate of the time testing ``test_size`` images will take, from
    timing the model on a few: a convolutional network needs seconds for MNIST's
    10,000 (an MLP a fraction of a second, inside ``AFTER_TRAINING_SECONDS``)."""
    from handgrad.nn.conv import Conv2d
    from handgrad.train import predict

    if test_size <= 0 or not any(isinstance(m, Conv2d) for m in model.modules()):
        return 0.0
    sample = x[: min(len(x), 256)]
    t0 = time.perf_counter()
    predict(model, sample, batch_size=eval_batch(model))
    return 1.5 * (time.perf_counter() - t0) * test_size / len(sample)


MLP_OPTIONS = {
    "hidden": ("--hidden", [128]),
    "activation": ("--activation", "relu"),
    "dropout": ("--dropout", 0.0),
    "batch_norm": ("--batch-norm", False),
}


def resolve_model_options(args: argparse.Namespace) -> None:
    """Fill the options left unset with the chosen model's defaults; refuse the
    options of the fully connected network for a convolutional one."""
    from handgrad.recipes import MODEL_DEFAULTS

    for name, (flag, default) in MLP_OPTIONS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
        elif args.model != "mlp":
            raise CommandError(f"{flag} is for --model mlp; --model {args.model} is fixed")
    for name, default in MODEL_DEFAULTS[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.output is None:
        args.output = Path(f"{'kaggle' if args.command == 'kaggle' else 'mnist'}-{args.model}.npz")


def _build_model(
    args: argparse.Namespace,
    image_shape: tuple[int, ...],
    num_classes: int,
    rng: np.random.Generator,
) -> tuple[Any, str]:
    """The network of ``--model`` and a few words describing it."""
    from handgrad.recipes import build_cnn, build_lenet, build_mlp

    dtype = np.dtype(args.dtype)
    if args.model == "mlp":
        model = build_mlp(
            int(np.prod(image_shape)),
            args.hidden,
            num_classes,
            activation=args.activation,
            dropout=args.dropout,
            batch_norm=args.batch_norm,
            rng=rng,
            dtype=dtype,
        )
        return model, f"{len(args.hidden)} hidden layer(s) {args.hidden}, {args.activation}"
    side = math.isqrt(int(np.prod(image_shape)))
    if len(image_shape) == 1 and side * side == image_shape[0]:
        image_shape = (side, side)  # flat rows of a square image, as in the Kaggle CSV
    if len(image_shape) != 2:
        raise CommandError(
            f"--model {args.model} needs 2-D images, but the samples have shape {image_shape}"
        )
    build = build_lenet if args.model == "lenet" else build_cnn
    try:
        model = build(image_shape, num_classes, rng=rng, dtype=dtype)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if args.model == "lenet":
        return model, "lenet (conv 32 3x3, pool, conv 64 3x3, pool, fc 128, fc 10)"
    return model, "cnn (conv 32, 64 and 128 3x3 with batch norm, pools, fc 10)"


def _train(
    args: argparse.Namespace,
    rng: np.random.Generator,
    train: XY,
    val: XY | None,
    extra_callbacks: tuple[Any, ...] = (),
    resume: Any = None,
) -> tuple[Any, Any]:
    """Build, train and return ``(model, history)`` per the options; see :func:`_split`.

    ``extra_callbacks`` are called as ``make(scheduler)`` for callbacks that need the
    scheduler (checkpoints); ``resume`` is a checkpoint's TrainingState."""
    from handgrad.callbacks import EarlyStopping, ProgressBar, TimeLimit
    from handgrad.nn.losses import CrossEntropyLoss
    from handgrad.recipes import default_augment, default_lr, make_optimizer, make_scheduler

    x, y = train
    if len(x) == 0:
        raise CommandError("no training samples left (lower --val-fraction?)")
    warning = batch_size_warning(args.batch_size, len(x))
    if warning:
        print(f"handgrad {args.command}: warning: {warning}", file=sys.stderr, flush=True)
    # every class seen in training or validation gets an output
    num_classes = int(max(y.max(), -1 if val is None else val[1].max())) + 1
    model, description = _build_model(args, x.shape[1:], num_classes, rng)
    lr = args.lr if args.lr is not None else default_lr(args.model, args.optimizer)
    augment = default_augment() if args.augment else None
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
        margin += _testing_seconds(model, x, getattr(args, "test_size", 0))
        callbacks.append(TimeLimit(args.time_limit, margin=margin, start=args.start_time))
    if args.patience:
        if val is None:
            raise CommandError("--patience needs validation data: set --val-fraction above 0")
        callbacks.append(EarlyStopping(patience=args.patience, restore_best_weights=True))
    callbacks += [make(scheduler) for make in extra_callbacks]
    if resume is not None and not args.quiet:
        where = f"epoch {resume.epoch + 1}" + (f", step {resume.step + 1}" if resume.step else "")
        print(f"resuming {args.resume} at {where}", flush=True)
    if not args.quiet:
        print(
            f"model: {description}, {model.num_parameters():,} parameters; {args.optimizer} "
            f"lr {lr:g}, {args.schedule} schedule; {args.epochs} epochs of {len(x):,} "
            f"samples, batch {args.batch_size}" + (", augmented" if augment else ""),
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
        augment=augment,
        eval_batch_size=eval_batch(model),
        resume=resume,
    )
    if interrupted(history):
        return model, history
    if diverged(history):
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
    from handgrad.nn.conv import Conv2d

    first = next((m for m in model.modules() if isinstance(m, Conv2d)), None)
    if first is not None and first.in_channels == 1:  # the filters of the first convolution
        w = first.weight.data
        written.append(
            plots.plot_first_layer(
                w.reshape(w.shape[0], -1), directory / "first_layer_weights.png", w.shape[2:]
            )
        )
    first = next(iter(linear_layers(model)), None)
    if first is not None and first.in_features == 784:
        written.append(
            plots.plot_first_layer(first.weight.data, directory / "first_layer_weights.png")
        )
    return written


def _resume_command(args: argparse.Namespace, checkpoint: Path) -> str:
    import shlex

    argv = ["handgrad", "train", "--resume", str(checkpoint)]
    for key in RESUME_OPTIONS:
        value = getattr(args, key, None)
        if key == "checkpoint" or value in (None, False):
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return shlex.join(argv)


def _resume_threads(settings: dict[str, Any], args: argparse.Namespace) -> None:
    """A resumed run computes with the thread counts of the run it continues."""
    from handgrad._blas import blas_threads, set_blas_threads
    from handgrad._parallel import get_num_threads, set_num_threads

    if args.threads is not None:
        return
    blas, own = settings.get("blas_threads"), settings.get("threads")
    if isinstance(blas, int) and blas > 0 and blas != blas_threads():
        set_blas_threads(blas)
    if isinstance(own, int) and own > 0 and own != get_num_threads():
        set_num_threads(own)


def cmd_train(args: argparse.Namespace) -> int:
    import signal

    from handgrad.checkpoint import TrainingCheckpoint, load_checkpoint
    from handgrad.train import predict

    state = None
    if args.resume is not None:
        state = load_checkpoint(args.resume)
        apply_checkpoint_settings(args, state.settings)
        _resume_threads(state.settings, args)
    resolve_model_options(args)
    check_outputs(args)
    if args.checkpoint is not None:
        check_output_file(args.checkpoint, "--checkpoint", "run.ckpt.npz")
    checkpoint = args.checkpoint or args.output.with_name(f"{args.output.stem}-checkpoint.npz")
    start = time.perf_counter()
    data = load_mnist_for(args)
    x_test, y_test = data.x_test, data.y_test
    args.test_size = len(x_test)
    rng, train, val = _split(args, data.x_train, data.y_train)
    del data  # the unsplit training set (47 MB of MNIST): only the split copies are used
    settings = _run_settings(args, *train)
    if state is not None and state.settings.get("data") != settings["data"]:
        raise CommandError(
            f"{args.resume}: the training data differ from the run's (another --data-dir, "
            "or the files changed): a resumed run needs the same data"
        )
    stopper = _StopOnSignal()
    make_checkpoint = lambda scheduler: TrainingCheckpoint(  # noqa: E731
        checkpoint, scheduler, settings, every_epoch=args.checkpoint is not None
    )
    try:
        with stopper:
            model, history = _train(
                args, rng, train, val, (lambda _: stopper.callback, make_checkpoint), state
            )
    except KeyboardInterrupt:
        if stopper.signum is None:  # not one of ours (no handler: not the main thread)
            raise
        # asked twice: stopped at once, mid-step; only an epoch's checkpoint is whole
        name = signal.Signals(stopper.signum).name
        kept = "nothing was saved"
        if args.checkpoint is not None and args.checkpoint.exists():
            done = load_checkpoint(args.checkpoint)
            kept = (
                f"the checkpoint of epoch {done.epoch}, {checkpoint}, is kept; resume with: "
                f"{_resume_command(args, checkpoint)}"
            )
        print(f"handgrad train: {name} twice: stopped at once; {kept}", file=sys.stderr)
        return 128 + stopper.signum
    n_train = len(train[1])
    del train, val
    if stopper.signum is not None and interrupted(history):
        done = load_checkpoint(checkpoint)
        where = f"{done.epoch} epoch(s)" + (
            f" and {done.step} step(s) of the next" if done.step > 0 else ""
        )
        print(
            f"handgrad train: {history.stop_reason} after {where}: checkpoint saved to "
            f"{checkpoint}\nresume with: {_resume_command(args, checkpoint)}",
            file=sys.stderr,
            flush=True,
        )
        return 128 + stopper.signum
    if stopper.signum is not None:  # the signal came as training ended: go on, then stop
        print(f"handgrad train: {signal.Signals(stopper.signum).name} received", file=sys.stderr)
    train_seconds = time.perf_counter() - start
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged model may overflow
        y_pred = predict(model, x_test, batch_size=eval_batch(model))
    test_acc = float(np.mean(y_pred == y_test))
    num_classes = output_classes(model) or int(y_test.max()) + 1
    cause = LIKELY_CAUSE
    if args.batch_size >= n_train:
        cause = f"--batch-size {args.batch_size:,} makes every epoch a single step"
    failed = failure(history, test_acc, len(y_test), num_classes, cause)
    if failed is not None:
        if not diverged(history):  # diverged runs have said so already
            print(f"handgrad train: training failed: {failed}", file=sys.stderr, flush=True)
        args.no_save = True
        kept = f"; {args.output} was left as it was" if args.output.exists() else ""
        print(f"handgrad train: the model was not saved{kept}", file=sys.stderr, flush=True)
    if not args.no_save and not _save_model(args, model, history, test_acc, checkpoint):
        return 1
    if args.plots is not None:
        for path in _write_plots(args.plots, model, history, x_test, y_test, y_pred):
            if not args.quiet:
                print(f"plot: {path}")
    wall = time.perf_counter() - start
    peak = peak_memory_mb()
    print(
        f"test accuracy {test_acc:.2%} ({int(np.sum(y_pred == y_test))}/{len(y_pred)})  "
        f"epochs {history.epochs}  train {train_seconds:.1f} s  wall {wall:.1f} s"
        + ("" if peak is None else f"  peak memory {peak:.0f} MB")
        + ("" if args.no_save else f"  saved {args.output}"),
        flush=True,
    )
    return 1 if failed is not None else 0


def _save_model(
    args: argparse.Namespace, model: Any, history: Any, test_acc: float, checkpoint: Path
) -> bool:
    """Save the trained model; on failure say so, and where the last checkpoint is."""
    from handgrad.serialization import save

    try:
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
    except OSError as exc:
        last = (
            f"the last checkpoint, {checkpoint}, holds the run as of its last epoch"
            if args.checkpoint is not None and checkpoint.exists()
            else "no checkpoint was written (--checkpoint PATH keeps one every epoch)"
        )
        print(
            f"handgrad train: error: could not save the trained model to {args.output}: "
            f"{exc.strerror or exc}; {last}",
            file=sys.stderr,
            flush=True,
        )
        return False
    return True


def cmd_kaggle(args: argparse.Namespace) -> int:
    from handgrad.data import load_kaggle_csv, write_kaggle_submission
    from handgrad.serialization import save
    from handgrad.train import predict

    resolve_model_options(args)
    check_outputs(args)
    check_output_file(args.submission, "--submission")
    if args.plots is not None and args.val_fraction <= 0:
        raise CommandError("--plots needs held-out labelled data here: set --val-fraction above 0")
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
    side = math.isqrt(x.shape[1])
    if side * side == x.shape[1]:  # flat rows of square images: image-shaped, for
        x, x_test = x.reshape(-1, side, side), x_test.reshape(-1, side, side)  # augmentation
    args.test_size = len(x_test)
    rng, train, val = _split(args, x, y)
    del x, y
    model, history = _train(args, rng, train, val)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged model may overflow
        labels = predict(model, x_test, batch_size=eval_batch(model))
    write_kaggle_submission(args.submission, labels)
    if not args.no_save:
        save(model, args.output)
    if args.plots is not None and val is not None:
        # The test CSV has no labels: the mistakes shown are the validation set's.
        x_val, y_val = val
        y_val_pred = predict(model, x_val, batch_size=eval_batch(model))
        for path in _write_plots(args.plots, model, history, x_val, y_val, y_val_pred):
            if not args.quiet:
                print(f"plot: {path}")
    print(f"wrote {len(labels)} predictions to {args.submission}")
    return 1 if diverged(history) else 0
