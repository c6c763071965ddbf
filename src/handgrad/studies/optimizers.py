"""optimizers: eight update rules on one recipe, from the same start on the same batches.

The recipe is the 784-128-10 ReLU network on a subset of MNIST, batch 64, a fixed
number of epochs. Every optimizer starts from the same initial weights and sees the
same batches in the same order, so the only difference is the update rule:

- SGD, ``w -= lr * g``, at lr 0.1;
- SGD with momentum 0.9 and Nesterov momentum 0.9 at lr 0.01: a velocity sums
  gradients with weight ``0.9**k``, so the steady step is ``lr / (1 - 0.9)`` = 0.1,
  the plain SGD step, and any difference comes from the averaging, not a larger step;
- RMSprop (1e-3), Adagrad (0.01), Adam (1e-3) and AdamW (1e-3, weight decay 0.01):
  each weight's step is divided by a running size of its own gradients, so the rate
  is a step in weight units (their usual defaults);
- Lion (3e-4): the step is the *sign* of a momentum, every weight moves by exactly
  ``lr``, so it needs a rate 3-10 times smaller than Adam's (the paper's advice).

The table gives each one's final training loss, test accuracy, the time of the whole
run and of one update alone (the median of repeated ``optimizer.step()`` calls); the figure
draws the per-batch loss curves on one axis. A run whose loss becomes NaN or inf is
stopped by ``fit`` and reported as diverged, never a crash.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from handgrad import nn, optim
from handgrad.callbacks import Callback
from handgrad.data import load_mnist
from handgrad.recipes import build_mlp
from handgrad.studies._base import Context, Report, Table, pyplot
from handgrad.train import evaluate, fit

Factory = Callable[[list[nn.Parameter]], optim.Optimizer]

# name -> (learning rate, the optimizer built with it)
OPTIMIZERS: dict[str, tuple[float, Factory]] = {
    "SGD": (0.1, lambda p: optim.SGD(p, lr=0.1)),
    "momentum": (0.01, lambda p: optim.SGD(p, lr=0.01, momentum=0.9)),
    "Nesterov": (0.01, lambda p: optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True)),
    "RMSprop": (1e-3, lambda p: optim.RMSprop(p, lr=1e-3)),
    "Adagrad": (0.01, lambda p: optim.Adagrad(p, lr=0.01)),
    "Adam": (1e-3, lambda p: optim.Adam(p, lr=1e-3)),
    "AdamW": (1e-3, lambda p: optim.AdamW(p, lr=1e-3, weight_decay=0.01)),
    "Lion": (3e-4, lambda p: optim.Lion(p, lr=3e-4)),
}


class BatchLosses(Callback):
    """Records the loss of every training batch."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        self.losses.append(float(logs["loss"]))


@dataclass
class OptimizerRun:
    """One optimizer's run: per-batch and per-epoch losses, test accuracy, time."""

    name: str
    lr: float
    batch_losses: list[float]
    epoch_losses: list[float]
    test_accuracy: float
    seconds: float
    step_ms: float  # median time of one optimizer.step() on this network
    stop_reason: str | None

    @property
    def diverged(self) -> bool:
        return self.stop_reason is not None and self.stop_reason.startswith("non-finite")


def train_one(
    name: str,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    init_seed: int,
    order_seed: int,
    epochs: int,
    batch_size: int = 64,
) -> OptimizerRun:
    """Train the 784-128-10 MLP with optimizer ``name`` from weights ``init_seed``,
    batches shuffled from ``order_seed``; evaluate on the test part of ``data``."""
    x, y, x_test, y_test = data
    lr, make = OPTIMIZERS[name]
    model = build_mlp(784, [128], 10, rng=np.random.default_rng(init_seed))
    loss = nn.CrossEntropyLoss()
    optimizer = make(list(model.parameters()))
    record = BatchLosses()
    start = time.perf_counter()
    with warnings.catch_warnings():  # divergence is reported in the table instead
        warnings.simplefilter("ignore", RuntimeWarning)
        history = fit(
            model,
            loss,
            optimizer,
            (x, y),
            epochs=epochs,
            batch_size=batch_size,
            rng=np.random.default_rng(order_seed),
            callbacks=[record],
            verbose=0,
        )
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, loss, x_test, y_test)["accuracy"]
    step_ms = 1e3 * median_step_seconds(optimizer)
    return OptimizerRun(
        name,
        lr,
        record.losses,
        history.history.get("loss", []),
        accuracy,
        seconds,
        step_ms,
        history.stop_reason,
    )


def median_step_seconds(optimizer: optim.Optimizer, repeats: int = 30) -> float:
    """Median wall time of one ``optimizer.step()`` (on the gradients of the last
    batch; it moves the weights, so call it after the model has been evaluated)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def smooth(values: list[float], window: int) -> np.ndarray:
    """Moving average over ``window`` batches (shorter at the start)."""
    v = np.asarray(values, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(1, len(v) + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def run(ctx: Context) -> Report:
    report = Report("optimizers", "Optimizers: eight update rules, one network, the same batches")
    rng = ctx.rng()
    n_train, n_test, epochs = ctx.pick((2000, 1000, 2), (20000, 10000, 3))
    mnist = load_mnist()
    pick = rng.permutation(len(mnist.x_train))[:n_train]
    test = rng.permutation(len(mnist.x_test))[:n_test]
    data = (mnist.x_train[pick], mnist.y_train[pick], mnist.x_test[test], mnist.y_test[test])
    init_seed, order_seed = (int(s) for s in rng.integers(2**32, size=2))

    runs = [
        train_one(name, data, init_seed=init_seed, order_seed=order_seed, epochs=epochs)
        for name in ctx.progress(OPTIMIZERS, "optimizers", total=len(OPTIMIZERS))
    ]

    rows = []
    for r in runs:
        status = "ok"
        if r.diverged and r.stop_reason is not None:
            status = "diverged: NaN/inf at " + r.stop_reason.split(":")[0].split(" at ")[-1]
        final = f"{r.epoch_losses[-1]:.4f}" if r.epoch_losses and not r.diverged else "-"
        first = f"{r.epoch_losses[0]:.4f}" if r.epoch_losses else "-"
        rows.append(
            [
                r.name,
                f"{r.lr:g}",
                first,
                final,
                f"{100 * r.test_accuracy:.1f}%",
                f"{r.seconds:.1f} s",
                f"{r.step_ms:.2f} ms",
                status,
            ]
        )
    caption = (
        f"784-128-10 ReLU MLP, {n_train} MNIST training images, batch 64, {epochs} "
        f"epoch(s), tested on {n_test} test images; same initial weights and batch order; "
        "loss = mean training loss over an epoch"
    )
    report.tables.append(
        Table(
            [
                "optimizer",
                "lr",
                "epoch-1 loss",
                "final loss",
                "test accuracy",
                "time",
                "one update",
                "status",
            ],
            rows,
            caption,
        )
    )
    report.numbers.update(
        runs={r.name: r for r in runs}, n_train=n_train, n_test=n_test, epochs=epochs
    )

    ok = [r for r in runs if not r.diverged]
    by = {r.name: r for r in runs}
    if ok:
        best = max(ok, key=lambda r: r.test_accuracy)
        worst = min(ok, key=lambda r: r.test_accuracy)
        report.findings.append(
            f"{best.name} reached the best test accuracy ({100 * best.test_accuracy:.1f}%), "
            f"{worst.name} the lowest ({100 * worst.test_accuracy:.1f}%)."
        )
    if not by["Adam"].diverged and not by["SGD"].diverged:
        adam, sgd = by["Adam"].epoch_losses[-1], by["SGD"].epoch_losses[-1]
        report.findings.append(
            f"Adam's final training loss is {adam:.3f} against plain SGD's {sgd:.3f}: "
            f"{'lower' if adam < sgd else 'not lower'}, with a per-weight step size instead "
            "of one rate for every weight."
        )
    momentum = by["momentum"]
    if not momentum.diverged and not by["SGD"].diverged:
        m, s = momentum.epoch_losses[-1], by["SGD"].epoch_losses[-1]
        report.findings.append(
            f"Momentum 0.9 at lr 0.01 takes the same steady step as SGD at 0.1 once its "
            f"velocity has built up (about 10 batches), and ends at loss {m:.3f} against "
            f"SGD's {s:.3f} ({'lower' if m < s else 'higher'}): with the step size matched, "
            "what is left is the averaging of gradients over batches."
        )
    diverged = [r.name for r in runs if r.diverged]
    report.findings.append(
        "Diverged: " + ", ".join(diverged) + "." if diverged else "No run diverged."
    )
    cheapest = min(runs, key=lambda r: r.step_ms)
    dearest = max(runs, key=lambda r: r.step_ms)
    steps = len(runs[0].batch_losses)
    mean_step = 1e3 * float(np.mean([r.seconds for r in runs])) / max(1, steps)
    report.findings.append(
        f"One update takes {cheapest.step_ms:.2f} ms ({cheapest.name}) to "
        f"{dearest.step_ms:.2f} ms ({dearest.name}), against about {mean_step:.1f} ms for a "
        "whole training step, forward and backward included: "
        f"{100 * dearest.step_ms / mean_step:.0f}% at most."
    )

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    window = max(1, len(runs[0].batch_losses) // 30)
    for r in runs:
        if r.batch_losses:
            style = {"momentum": "--", "Nesterov": ":", "AdamW": "--"}.get(r.name, "-")
            ax.plot(smooth(r.batch_losses, window), style, label=f"{r.name} (lr {r.lr:g})", lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("batch")
    ax.set_ylabel(f"training loss (moving average of {window} batches)")
    ax.set_title("Optimizers on the same network and batches")
    ax.legend(ncol=2, fontsize=8)
    path = ctx.figure("optimizers")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)
    return report
