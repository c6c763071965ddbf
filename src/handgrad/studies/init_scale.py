"""init-scale: the scale of the initial weights decides whether a deep ReLU network
trains at all.

The same MNIST network (six hidden ReLU layers of 256 units, SGD with momentum)
starts five ways. With ``n`` the fan-in of a layer:

- **He**, ``std = sqrt(2 / n)``: each ReLU layer keeps the variance of its input
  (``Var(z) = n std^2 Var(x) / 2``), forward and backward, so every layer learns.
- **He divided**, the classic slip ``randn(...) / sqrt(2 / n)`` instead of
  ``* sqrt(2 / n)``: ``std = sqrt(n / 2)``, so each layer multiplies the signal by
  about ``n / 2``; the scores are astronomically large, the softmax is a hard
  argmax, and the first steps throw the weights far away (or overflow).
- **too small**, ``std = 0.01``: each layer multiplies the signal by
  ``0.01 sqrt(n / 2)`` (about 0.11 for 256 units), so after six layers it is gone,
  and so is the gradient of every layer but the last ones.
- **zero**: every hidden unit computes the same thing (zero) and receives the same
  gradient (zero): the hidden layers never change, only the output bias learns,
  and the network predicts the most common class.
- **constant** ``1 / n``: the signal keeps its size, but all units of a layer start
  identical and every update keeps them identical (symmetry): the layer acts like
  a single unit, however wide it is.

The statistics are measured on a fixed batch of training images: the root mean
square of each hidden layer's output (the quantity of the variance algebra) and of
each hidden layer's weight gradient, at initialisation and after training.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from handgrad import nn, optim
from handgrad.data import load_mnist
from handgrad.studies._base import Context, Report, Table, pyplot
from handgrad.train import evaluate, fit


def he(shape: tuple[int, ...], rng: np.random.Generator, dtype: type = np.float32) -> np.ndarray:
    """``randn * sqrt(2 / fan_in)``: the correct scale for ReLU layers."""
    return nn.init.normal(shape, math.sqrt(2.0 / shape[1]), rng, dtype)


def he_divided(
    shape: tuple[int, ...], rng: np.random.Generator, dtype: type = np.float32
) -> np.ndarray:
    """``randn / sqrt(2 / fan_in)``: the slip, ``std = sqrt(fan_in / 2)``."""
    return nn.init.normal(shape, 1.0 / math.sqrt(2.0 / shape[1]), rng, dtype)


def too_small(
    shape: tuple[int, ...], rng: np.random.Generator, dtype: type = np.float32
) -> np.ndarray:
    """``randn * 0.01``, whatever the layer's size."""
    return nn.init.normal(shape, 0.01, rng, dtype)


def zero(shape: tuple[int, ...], rng: np.random.Generator, dtype: type = np.float32) -> np.ndarray:
    """All weights 0."""
    return nn.init.zeros(shape, dtype)


def constant(
    shape: tuple[int, ...], rng: np.random.Generator, dtype: type = np.float32
) -> np.ndarray:
    """All weights ``1 / fan_in``: the right size, no randomness."""
    return np.full(shape, 1.0 / shape[1], dtype=dtype)


INITIALISERS: dict[str, tuple[str, Callable[..., np.ndarray]]] = {
    "He": ("sqrt(2/n)", he),
    "He divided": ("sqrt(n/2)", he_divided),
    "too small": ("0.01", too_small),
    "zero": ("0", zero),
    "constant": ("1/n, all equal", constant),
}


def relu_mlp(
    weight_init: Callable[..., np.ndarray], depth: int, width: int, rng: np.random.Generator
) -> nn.Sequential:
    """``784 -> [Linear(width) -> ReLU] * depth -> Linear(10)``, weights from ``weight_init``."""
    layers: list[nn.Module] = []
    fan_in = 784
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width, rng=rng, weight_init=weight_init), nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, 10, rng=rng, weight_init=weight_init))
    return nn.Sequential(*layers)


def layer_rms(
    model: nn.Sequential, loss: nn.Loss, x: np.ndarray, y: np.ndarray
) -> tuple[list[float], list[float]]:
    """One forward and backward pass on ``(x, y)``: the root mean square of each hidden
    layer's output and of each hidden ``Linear``'s weight gradient (NaN if the loss is not
    finite)."""
    modules = list(model)
    acts = []
    out = x
    with np.errstate(all="ignore"):
        for module in modules:
            out = module.forward(out)
            if isinstance(module, nn.ReLU):
                acts.append(float(np.sqrt(np.mean(out.astype(np.float64) ** 2))))
        hidden = [m for m in modules if isinstance(m, nn.Linear)][:-1]
        model.zero_grad()
        if not math.isfinite(loss.forward(out, y)):
            return acts, [math.nan] * len(hidden)
        dout = loss.backward()
        for module in reversed(modules):
            dout = module.backward(dout)
        grads = [float(np.sqrt(np.mean(m.weight.grad.astype(np.float64) ** 2))) for m in hidden]
    model.zero_grad()
    return acts, grads


def distinct_units(layer: nn.Linear) -> int:
    """How many different units (rows of the weight matrix, with their biases) a layer has."""
    assert layer.bias is not None
    rows = np.hstack([layer.weight.data, layer.bias.data[:, None]])
    return len(np.unique(rows, axis=0))


@dataclass
class Run:
    """One initialisation: accuracy, losses per epoch, and the statistics (``[0]`` at
    initialisation, ``[1]`` after training) per hidden layer."""

    name: str
    test_accuracy: float
    losses: list[float]
    act_rms: tuple[list[float], list[float]]
    grad_rms: tuple[list[float], list[float]]
    distinct: int
    width: int
    stop_reason: str | None


def train_run(
    name: str,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    depth: int,
    width: int,
    epochs: int,
    lr: float,
    rng: np.random.Generator,
) -> Run:
    """Train the ReLU network started with ``INITIALISERS[name]``; measure it before and after."""
    x, y, x_test, y_test = data
    model = relu_mlp(INITIALISERS[name][1], depth, width, rng)
    loss = nn.CrossEntropyLoss()
    probe = ((x[:500] / 255.0).astype(np.float32), y[:500])
    before = layer_rms(model, loss, *probe)
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # divergence is in stop_reason
        history = fit(
            model, loss, optimizer, (x, y), epochs=epochs, batch_size=64, rng=rng, verbose=0
        )
    after = layer_rms(model, loss, *probe)
    with np.errstate(all="ignore"):
        accuracy = evaluate(model, loss, x_test, y_test)["accuracy"]
    first = model[0]
    assert isinstance(first, nn.Linear)
    return Run(
        name, accuracy, history.history.get("loss", []), (before[0], after[0]),
        (before[1], after[1]), distinct_units(first), width, history.stop_reason,
    )  # fmt: skip


def _g(value: float) -> str:
    return f"{value:.2g}" if math.isfinite(value) else "nan"


def run(ctx: Context) -> Report:
    report = Report("init-scale", "Initialisation scale: He, He divided, too small, zero")
    depth, width, lr = 6, 256, 0.01
    n_train, epochs = ctx.pick(2000, 20000), ctx.pick(2, 5)
    n_test = ctx.pick(2000, 10000)
    mnist = load_mnist()
    order = ctx.rng().permutation(len(mnist.y_train))[:n_train]
    data = (
        mnist.x_train[order].reshape(n_train, -1),
        mnist.y_train[order],
        mnist.x_test[:n_test].reshape(n_test, -1),
        mnist.y_test[:n_test],
    )
    runs = [
        train_run(name, data, depth=depth, width=width, epochs=epochs, lr=lr, rng=ctx.rng())
        for name in ctx.progress(INITIALISERS, "init-scale", total=len(INITIALISERS))
    ]
    majority = float(np.bincount(data[3]).max() / n_test)

    rows = []
    for r in runs:
        if r.stop_reason and r.stop_reason.startswith("non-finite"):
            where = re.search(r"epoch (\d+), batch (\d+)", r.stop_reason)
            outcome = f"diverged, epoch {where[1]} batch {where[2]}" if where else "diverged"
        else:
            outcome = f"loss {r.losses[-1]:.3f}" if r.losses else "-"
        a0, g0 = r.act_rms[0], r.grad_rms[0]
        rows.append([
            r.name, INITIALISERS[r.name][0], f"{100 * r.test_accuracy:.1f}%", outcome,
            _g(a0[0]), _g(a0[-1]), _g(g0[0]), _g(g0[-1]), f"{r.distinct}/{r.width}",
        ])  # fmt: skip
    report.tables.append(Table(
        ["initialiser", "weight std", "test acc", "end of training", "act L1", f"act L{depth}",
         "grad L1", f"grad L{depth}", "distinct units L1"],
        rows,
        f"{depth} hidden ReLU layers of {width}, SGD lr {lr} momentum 0.9, batch 64, {epochs} "
        f"epochs on {n_train} MNIST training images, tested on {n_test} (the most common "
        f"class is {100 * majority:.1f}% of them); act/grad: RMS of a hidden layer's output "
        "and of its weight gradient at initialisation, on 500 training images",
    ))  # fmt: skip
    for when, e in (("at initialisation", 0), ("after training", 1)):
        report.tables.append(Table(
            ["initialiser", *[f"act L{i + 1}" for i in range(depth)],
             *[f"grad L{i + 1}" for i in range(depth)]],
            [[r.name, *map(_g, r.act_rms[e]), *map(_g, r.grad_rms[e])] for r in runs],
            f"Per-layer RMS {when}",
        ))  # fmt: skip
    by_name = {r.name: r for r in runs}
    report.numbers.update(runs=by_name, majority=majority, depth=depth, width=width)
    _findings(report, by_name, majority, width)
    _figure(ctx, report, runs)
    return report


def _per_layer_factor(values: list[float]) -> float:
    """The average factor from one layer to the next (geometric mean)."""
    if values[0] <= 0 or values[-1] <= 0 or len(values) < 2:
        return 0.0
    return float((values[-1] / values[0]) ** (1 / (len(values) - 1)))


def _findings(report: Report, runs: dict[str, Run], majority: float, width: int) -> None:
    he_run, div, small = runs["He"], runs["He divided"], runs["too small"]
    factors = {k: _per_layer_factor(r.act_rms[0]) for k, r in runs.items()}
    report.numbers["factors"] = factors
    report.findings.append(
        f"He keeps the signal's size: the activations change by a factor "
        f"{factors['He']:.2f} per layer at initialisation, and the network reaches "
        f"{100 * he_run.test_accuracy:.1f}% test accuracy."
    )
    diverged = bool(div.stop_reason and div.stop_reason.startswith("non-finite"))
    report.findings.append(
        f"Dividing by the He factor multiplies the signal by {factors['He divided']:.0f} per "
        f"layer (the variance algebra says sqrt(n std^2 / 2) = {width / 2:.0f}): the last hidden "
        f"layer's RMS is {div.act_rms[0][-1]:.2g} instead of {he_run.act_rms[0][-1]:.2g}, "
        + ("training stops on a non-finite loss or gradient" if diverged
           else f"the first gradients are {div.grad_rms[0][0]:.2g} instead of "
           f"{he_run.grad_rms[0][0]:.2g}")
        + f", and the test accuracy is {100 * div.test_accuracy:.1f}%."
    )  # fmt: skip
    report.findings.append(
        f"Weights of std 0.01 shrink the signal by a factor {factors['too small']:.2f} per layer: "
        f"the last hidden layer's RMS is {small.act_rms[0][-1]:.2g} and the first layer's "
        f"gradient {small.grad_rms[0][0]:.2g} (He: {he_run.grad_rms[0][0]:.2g}); "
        f"{100 * small.test_accuracy:.1f}% test accuracy."
    )
    z, c = runs["zero"], runs["constant"]
    report.findings.append(
        f"Zero weights give every hidden unit the output 0 and the gradient 0: after training "
        f"the first layer still has {z.distinct} distinct unit(s) of {z.width}, and the "
        f"network scores {100 * z.test_accuracy:.1f}% (the most common class is "
        f"{100 * majority:.1f}%)."
    )
    report.findings.append(
        f"Equal weights (1/n) keep the signal's size but not its variety: every unit of a "
        f"layer gets the same update, so after training the first layer has {c.distinct} "
        f"distinct unit(s) of {c.width}; {100 * c.test_accuracy:.1f}% test accuracy."
    )


def _figure(ctx: Context, report: Report, runs: list[Run]) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for i, r in enumerate(runs):
        layers = np.arange(1, len(r.act_rms[0]) + 1)
        positive = [v if v > 0 else np.nan for v in r.act_rms[0]]  # zero has no logarithm
        ax1.semilogy(layers, positive, "o-", color=f"C{i}", label=r.name)
        if r.stop_reason and r.stop_reason.startswith("non-finite"):
            ax2.plot([], [], color=f"C{i}", label=f"{r.name} (diverged)")  # off the scale
        else:
            ax2.plot(np.arange(1, len(r.losses) + 1), r.losses, "o-", color=f"C{i}", label=r.name)
    ax1.set_xlabel("hidden layer")
    ax1.set_ylabel("RMS of the layer's output at initialisation")
    ax1.legend()
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss")
    ax2.set_yscale("log")
    ax2.legend()
    path = ctx.figure("init_scale")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)
