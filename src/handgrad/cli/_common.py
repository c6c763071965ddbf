"""Pieces every command shares: the user-facing error, output and package checks,
loading MNIST with the command line's hints, peak memory."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from handgrad._argtypes import output_dir_problem, output_file_problem
from handgrad._install import install_hint

XY = tuple[np.ndarray, np.ndarray]  # (samples, labels)


class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def peak_memory_mb() -> float | None:
    """The process's peak resident memory in MB, or None where it cannot be read."""
    try:
        import resource  # Unix only
    except ImportError:
        return None
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def one_line(message: str) -> str:
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


def require(module: str, package: str, purpose: str) -> None:
    """Fail now, before any work, if an optional package is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise CommandError(
            f"{purpose} needs {package}, which is not installed: {install_hint('cli')}"
        ) from None


def check_output_file(path: Path, option: str, example: str = "model.npz") -> None:
    problem = output_file_problem(path, example)
    if problem:
        raise CommandError(f"{option} {path}: {problem}")


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse unwritable output paths and missing packages before training, not after."""
    if not args.no_save:
        check_output_file(args.output, "--output")
    if args.plots is not None:
        problem = output_dir_problem(args.plots)
        if problem:
            raise CommandError(f"--plots {args.plots}: {problem}")
        require("matplotlib", "matplotlib", "--plots")


def batch_size_warning(batch_size: int, n_train: int) -> str | None:
    """What a ``--batch-size`` larger than the training set does, or None: training
    goes on with every epoch one step on all the samples (what full-batch gradient
    descent is; a 100,000,000 batch on MNIST ends near chance after a few epochs)."""
    if batch_size <= n_train:
        return None
    return (
        f"--batch-size {batch_size:,} is larger than the {n_train:,} training samples: every "
        f"epoch is a single step on all {n_train:,} of them, so training learns little per "
        f"epoch (use at most {n_train:,}; 32 to 512 is usual)"
    )


def load_mnist_for(args: argparse.Namespace) -> Any:
    """MNIST, or the MNIST-format dataset of ``--data-dir`` with any number of classes."""
    from handgrad.data import load_mnist

    return load_mnist(args.data_dir, download=args.download, num_classes=None)


def features(n: int, shape: tuple[int, ...] | None = None) -> str:
    """``784 input features (28x28 images)``: the images part when it is known or square."""
    side = math.isqrt(n)
    if shape is None and side * side == n:
        shape = (side, side)
    images = f" ({'x'.join(map(str, shape))} images)" if shape and len(shape) == 2 else ""
    return f"{n} input features{images}"


def linear_layers(model: Any) -> list[Any]:
    """The model's ``Linear`` layers, in order: the first sees the data, the last gives
    the class scores."""
    from handgrad.nn.layers import Linear

    return [m for m in model.modules() if isinstance(m, Linear)]


def output_classes(model: Any) -> int | None:
    """The output width of the model's last ``Linear`` layer (its number of classes)."""
    layers = linear_layers(model)
    return layers[-1].out_features if layers else None


def eval_batch(model: Any) -> int:
    """Images per batch when testing: 500 for a convolutional network (its im2col rows
    for 2,000 images would take half a gigabyte), 2,000 otherwise."""
    from handgrad.nn.conv import Conv2d

    return 500 if any(isinstance(m, Conv2d) for m in model.modules()) else 2000


def _first_layer(model: Any) -> Any:
    """The first module that computes something (containers and Flatten passed over)."""
    from handgrad.nn.layers import Flatten, Identity
    from handgrad.nn.module import Sequential

    for module in model.modules():
        if not isinstance(module, (Sequential, Flatten, Identity)):
            return module
    return None


def input_features(model: Any) -> int | None:
    """How many numbers one sample must have: the size the first ``Unflatten`` splits
    (a convolutional recipe) or the first ``Linear``'s input width (an MLP); None for
    a network that starts with a convolution (any image size fits it)."""
    from handgrad.nn.conv import Conv2d
    from handgrad.nn.layers import Linear, Unflatten

    for module in model.modules():
        if isinstance(module, Unflatten):
            return math.prod(module.unflattened_size)
        if isinstance(module, Linear):
            return module.in_features
        if isinstance(module, Conv2d):
            return None
    return None


def model_images(model: Any, x: np.ndarray) -> np.ndarray:
    """``x`` as the model takes it: a network that starts with a convolution gets the
    channel axis that grayscale ``(N, H, W)`` images lack (a view)."""
    from handgrad.nn.conv import Conv2d

    first = _first_layer(model)
    if isinstance(first, Conv2d) and x.ndim == 3:
        if first.in_channels != 1:
            raise CommandError(
                f"the model expects {first.in_channels}-channel images, the data has "
                "1-channel (grayscale) images"
            )
        return x[:, None]
    return x


def check_input_size(model: Any, shape: tuple[int, ...], what: str) -> None:
    """One clear line instead of a shape error deep in ``Linear.forward``."""
    expected = input_features(model)
    n = int(np.prod(shape))
    if expected is not None and expected != n:
        raise CommandError(f"the model expects {features(expected)}, {what} {features(n, shape)}")
