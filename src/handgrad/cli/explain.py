"""``handgrad explain``: one forward and one backward pass of a network, printed layer
by layer, with the formulas, the shapes, the statistics and numeric gradient checks."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from handgrad._argtypes import non_negative_int, positive_int
from handgrad.cli._common import (
    CommandError,
    check_input_size,
    check_output_file,
    model_images,
    output_classes,
)

PLOT_HINT = 'pip install "handgrad[plots]"'

EXPLAIN_DESCRIPTION = """\
One forward and one backward pass of a network on a batch of MNIST, printed layer
by layer: each operation with its formula, the backward formula with the shapes of
every gradient, statistics of activations and gradients (dead ReLUs, saturated
sigmoids), and each parameter gradient's relative error against central differences.
"""

EXPLAIN_EPILOG = """\
examples:
  handgrad explain                        # the untrained 784-128-10 network
  handgrad explain --tiny                 # 2-3-2, every matrix printed
  handgrad explain --model mnist-cnn.npz  # a trained model, layer by layer
  handgrad explain --plot layers.png      # histograms of activations and gradients

The numeric check compares each parameter's gradient with central differences
on a float64 copy of the network, over a random sample of its entries (--entries);
entries where a kink (a ReLU input at 0, a max-pool tie) lies within the
stencil are left out and counted. Exit code 1 when a gradient disagrees.
"""


def add_explain_parser(sub: Any) -> None:
    """Register ``handgrad explain`` on the command line's subparsers."""
    p = sub.add_parser(
        "explain",
        help="one forward and backward pass, layer by layer: formulas, shapes, statistics",
        description=EXPLAIN_DESCRIPTION,
        epilog=EXPLAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="FILE",
        help="a model saved by handgrad train, MLP or CNN (default: the untrained "
        "784-128-10 network of handgrad train, initialised with --seed)",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="a 2-3-2 network on two samples, with every matrix printed, to redo by hand",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="MNIST test images in the batch (default: 64, or 8 for a convolutional network)",
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        metavar="S",
        help="seed of the batch, the initial weights, dropout and the checked entries (default: 0)",
    )
    p.add_argument(
        "--entries",
        type=positive_int,
        default=20,
        metavar="K",
        help="entries of each parameter checked against central differences (default: 20)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write histograms of each layer's activations and gradients (PNG)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory with the four MNIST-format files, of which the test images are "
        "used (default: the shipped MNIST)",
    )
    # no --threads option, but main()'s thread set-up: the numeric check runs hundreds of
    # small forward passes, fastest on one BLAS thread (unless the environment sets them)
    p.set_defaults(func=cmd_explain, threads=None)


def _check_plot(path: Path | None) -> None:
    if path is None:
        return
    check_output_file(path, "--plot", "layers.png")
    if importlib.util.find_spec("matplotlib") is None:
        raise CommandError(f"--plot needs matplotlib, which is not installed: {PLOT_HINT}")


def _reseed(model: Any, seed: int) -> None:
    """Give every random module (dropout) a generator seeded with ``seed``: a loaded
    model's generators are fresh, and the run should repeat."""
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if isinstance(value, np.random.Generator):
                object.__setattr__(module, name, np.random.default_rng(seed))


def _mnist_batch(args: argparse.Namespace, model: Any | None) -> tuple[Any, Any, str]:
    """``(model, (x, y), description)``: the model of ``--model`` (or the reference
    MLP) and a batch of test images it takes."""
    from handgrad.data import load_mnist, to_float_images
    from handgrad.nn.conv import Conv2d
    from handgrad.recipes import build_mlp

    data = load_mnist(args.data_dir, num_classes=None)
    images, labels = data.x_test, data.y_test
    num_classes = int(labels.max()) + 1
    if model is None:
        n_in = int(np.prod(images.shape[1:]))
        model = build_mlp(n_in, [128], num_classes, rng=np.random.default_rng(args.seed))
        about = (
            f"the {n_in}-128-{num_classes} MLP of `handgrad train`, untrained (seed {args.seed})"
        )
    else:
        check_input_size(model, images.shape[1:], "the data has")
        classes = output_classes(model)
        if classes is not None and labels.max() >= classes:
            raise CommandError(
                f"the test labels go up to {labels.max()} but the model has {classes} "
                "outputs: it was trained on another dataset"
            )
        about = f"{args.model}"
    conv = any(isinstance(m, Conv2d) for m in model.modules())
    batch = args.batch_size or (8 if conv else 64)
    if batch > len(images):
        raise CommandError(f"--batch-size {batch}: the test set has only {len(images)} images")
    pick = np.sort(np.random.default_rng(args.seed).choice(len(images), batch, replace=False))
    dtype = next((p.dtype for p in model.parameters()), np.dtype(np.float32))
    x = model_images(model, to_float_images(images[pick], dtype=dtype, flatten=False))
    return model, (x, labels[pick]), about


def cmd_explain(args: argparse.Namespace) -> int:
    from handgrad.explain import THRESHOLD, explain, tiny_example
    from handgrad.serialization import load

    _check_plot(args.plot)
    if args.tiny:
        given_flags = (
            (args.model, "--model"),
            (args.batch_size, "--batch-size"),
            (args.data_dir, "--data-dir"),
        )
        for given, flag in given_flags:
            if given is not None:
                raise CommandError(f"--tiny has its own network and batch: leave out {flag}")
        model, x, y = tiny_example(args.seed)
        title = "handgrad explain --tiny: a 2-3-2 network small enough to redo by hand"
        about = [
            ("data", f"N = 2 samples of 2 features, labels y = {y.tolist()}"),
            ("weights", f"one decimal each, drawn with seed {args.seed}"),
        ]
    else:
        loaded = load(args.model) if args.model is not None else None
        model, (x, y), network = _mnist_batch(args, loaded)
        _reseed(model, args.seed)
        model.train()  # what one training step does: dropout on, batch statistics
        title = "handgrad explain: one training step of a network, layer by layer"
        source = "MNIST test images" if args.data_dir is None else f"test images of {args.data_dir}"
        about = [
            ("network", network),
            ("data", f"{len(y)} {source} drawn with seed {args.seed}, pixels / 255"),
        ]
    trace = explain(model, x, y, entries=args.entries, seed=args.seed)
    print(trace.format(title=title, about=about), end="")
    if args.plot is not None:
        path = trace.plot(args.plot)
        print(f"\nhistograms of activations and gradients written to {path}")
    wrong = [p for p in trace.params if p.rel_error is not None and not p.rel_error < THRESHOLD]
    return 1 if wrong or not np.isfinite(trace.loss.value) else 0
