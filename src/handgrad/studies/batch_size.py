"""batch-size: batch sizes from 1 to 4096 at the same budget of samples seen.

The same 784-128-10 ReLU network, from the same initial weights, is trained with
plain SGD at one learning rate on the same subset of MNIST for the same number
of epochs, so every batch size sees the same number of samples; only how they are
grouped into steps changes. (A subset, because a batch of 1 costs one Python-level
step per image: on all 60,000 images it would take minutes per epoch in NumPy.)

What it shows:

- **time per epoch**: a step has a fixed cost (a dozen NumPy calls, the optimizer
  update) besides its arithmetic, and a matrix product of 64 rows is far faster
  than 64 products of one row: small batches pay the fixed cost per sample.
- **accuracy**: at a fixed number of samples, a batch of ``B`` takes ``N / B``
  steps; a step averages the gradient of ``B`` samples, which is less noisy but
  not larger, so the huge batches take too few steps to get anywhere at the same
  learning rate, while the smallest take the most steps but with very noisy ones.
- **noise**: the loss of a batch is an average of ``B`` per-sample losses, so its
  spread around the trend of the curve shrinks like ``1 / sqrt(B)``. It is
  measured as ``std(diff(losses)) / sqrt(2)`` over the second half of training
  (the differences of successive batch losses remove the slow trend).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from handgrad import nn, optim
from handgrad.callbacks import Callback
from handgrad.data import load_mnist
from handgrad.studies._base import Context, Report, Table, pyplot
from handgrad.train import evaluate, fit, predict_scores


class BatchLosses(Callback):
    """Keeps the loss of every training batch."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        self.losses.append(logs["loss"])


def per_sample_losses(model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each sample's cross-entropy under ``model``, float64 ``(N,)``."""
    logp = nn.functional.log_softmax(predict_scores(model, x).astype(np.float64), axis=1)
    return -logp[np.arange(len(y)), y]


def sampling_noise(
    losses: np.ndarray, batch_size: int, draws: int, rng: np.random.Generator
) -> tuple[float, float]:
    """The spread of a batch's mean loss at fixed weights: the std over ``draws`` random
    batches (without replacement within a batch), and the prediction ``sigma / sqrt(B)``
    with the finite-population correction ``sqrt((N - B) / (N - 1))``."""
    n = len(losses)
    means = [losses[rng.permutation(n)[:batch_size]].mean() for _ in range(draws)]
    predicted = losses.std() / math.sqrt(batch_size) * math.sqrt((n - batch_size) / (n - 1))
    return float(np.std(means)), float(predicted)


def curve_noise(losses: list[float]) -> float:
    """The spread of a loss curve around its trend: ``std(diff) / sqrt(2)`` of its second
    half (NaN with fewer than 3 points there)."""
    tail = np.asarray(losses[len(losses) // 2 :], dtype=np.float64)
    if len(tail) < 3:
        return math.nan
    return float(np.std(np.diff(tail)) / math.sqrt(2))


@dataclass
class Run:
    """One batch size: test accuracy, seconds per epoch, every batch's loss, the noise."""

    batch_size: int
    test_accuracy: float
    seconds_per_epoch: float
    steps: int
    losses: list[float]
    noise: float
    train_loss: float
    model: nn.Module
    diverged: bool


def train_run(
    batch_size: int,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    epochs: int,
    lr: float,
    init_seed: int,
    shuffle_seed: int,
) -> Run:
    """Train 784-128-10 with plain SGD at ``batch_size``; the same initial weights
    (``init_seed``) and the same shuffling generator (``shuffle_seed``) for every size."""
    x, y, x_test, y_test = data
    g = np.random.default_rng(init_seed)
    model = nn.Sequential(nn.Linear(784, 128, rng=g), nn.ReLU(), nn.Linear(128, 10, rng=g))
    loss = nn.CrossEntropyLoss()
    recorder = BatchLosses()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # divergence is in stop_reason
        history = fit(model, loss, optim.SGD(model.parameters(), lr=lr), (x, y), epochs=epochs,
                      batch_size=batch_size, rng=shuffle_seed, callbacks=[recorder],
                      verbose=0)  # fmt: skip
    diverged = (history.stop_reason or "").startswith("non-finite")
    accuracy = evaluate(model, loss, x_test, y_test)["accuracy"]
    return Run(
        batch_size, accuracy, float(np.mean(history.history.get("seconds", [math.nan]))),
        len(recorder.losses), recorder.losses, curve_noise(recorder.losses),
        history.history.get("loss", [math.nan])[-1], model, diverged,
    )  # fmt: skip


def run(ctx: Context) -> Report:
    report = Report("batch-size", "Batch size at a matched budget of samples seen")
    sizes = ctx.pick([1, 8, 64, 256], [1, 4, 16, 64, 256, 1024, 4096])
    n_train, epochs, lr = ctx.pick(1024, 8192), ctx.pick(2, 8), 0.05
    n_test = ctx.pick(2000, 10000)
    mnist = load_mnist()
    rng = ctx.rng()
    order = rng.permutation(len(mnist.y_train))[:n_train]
    init_seed, shuffle_seed = (int(s) for s in rng.integers(2**31, size=2))
    data = (
        mnist.x_train[order].reshape(n_train, -1),
        mnist.y_train[order],
        mnist.x_test[:n_test].reshape(n_test, -1),
        mnist.y_test[:n_test],
    )
    runs = [
        train_run(b, data, epochs=epochs, lr=lr, init_seed=init_seed, shuffle_seed=shuffle_seed)
        for b in ctx.progress(sizes, "batch-size", total=len(sizes))
    ]

    # The sampling noise of each batch size, all at the same weights: those of the middle
    # run (batch 64), neither untrained nor so well fitted that almost every loss is 0
    reference = runs[len(runs) // 2]
    losses = per_sample_losses(reference.model, data[0], data[1])
    sampled = {r.batch_size: sampling_noise(losses, r.batch_size, 400, rng) for r in runs}
    rows = [
        [
            str(r.batch_size), str(r.steps), f"{100 * r.test_accuracy:.1f}%",
            "diverged" if r.diverged else f"{r.train_loss:.3f}", f"{r.seconds_per_epoch:.2f} s",
            f"{n_train / r.seconds_per_epoch:,.0f} images/s",
            f"{r.noise:.3f}" if math.isfinite(r.noise) else "-",
            f"{sampled[r.batch_size][0]:.2g}", f"{sampled[r.batch_size][1]:.2g}",
        ]
        for r in runs
    ]  # fmt: skip
    report.tables.append(Table(
        ["batch size", "steps", "test acc", "train loss", "time per epoch", "speed",
         "curve noise", "batch-loss std", "sigma/sqrt(B)"],
        rows,
        f"784-128-10 ReLU, plain SGD lr {lr}, the same initial weights; every batch size sees "
        f"{epochs} epochs of the same {n_train} MNIST training images ({epochs * n_train:,} "
        f"samples); tested on {n_test}; train loss: mean over the last epoch; curve noise: "
        "std of successive differences of the batch losses / sqrt(2), second half of "
        f"training; batch-loss std: over 400 random batches at the weights of batch "
        f"{reference.batch_size}'s run, beside its prediction",
    ))  # fmt: skip
    by_size = {r.batch_size: r for r in runs}
    report.numbers.update(runs=by_size, samples=epochs * n_train, sampled=sampled)
    _findings(report, runs, sampled)
    _figure(ctx, report, runs, n_train)
    return report


def _findings(report: Report, runs: list[Run], sampled: dict[int, tuple[float, float]]) -> None:
    best = max(runs, key=lambda r: r.test_accuracy)
    small, large = runs[0], runs[-1]
    report.findings.append(
        f"With the same number of samples seen, batch {best.batch_size} is the most accurate "
        f"({100 * best.test_accuracy:.1f}%); batch {large.batch_size} takes only {large.steps} "
        f"steps and reaches {100 * large.test_accuracy:.1f}%, batch {small.batch_size} takes "
        f"{small.steps} and reaches {100 * small.test_accuracy:.1f}%."
    )
    fastest = min(runs, key=lambda r: r.seconds_per_epoch)
    report.findings.append(
        f"An epoch at batch {small.batch_size} takes {small.seconds_per_epoch:.2f} s, "
        f"{small.seconds_per_epoch / fastest.seconds_per_epoch:.0f} times the "
        f"{fastest.seconds_per_epoch:.3f} s at batch {fastest.batch_size}: every step pays a "
        f"fixed cost, and one matrix product of many rows beats many of one row."
    )
    measured = [r for r in runs if math.isfinite(r.noise)]
    a, b = measured[0], measured[-1]
    report.findings.append(
        f"The loss curve's noise falls from {a.noise:.3f} at batch {a.batch_size} to "
        f"{b.noise:.3f} at batch {b.batch_size} (it also depends on how far each run got: "
        "an untrained network gives every image about the same loss)."
    )
    worst = max(abs(m / p - 1) for m, p in sampled.values())
    report.findings.append(
        "At the same weights, a batch's loss spreads like sigma / sqrt(B): the measured "
        f"spreads are within {100 * worst:.0f}% of that prediction, from "
        f"{sampled[small.batch_size][0]:.2g} at batch {small.batch_size} to "
        f"{sampled[large.batch_size][0]:.2g} at batch {large.batch_size}."
    )


def _figure(ctx: Context, report: Report, runs: list[Run], n_train: int) -> None:
    plt = pyplot()
    # one panel per batch size, the same linear scale: the noise is what differs
    fig, axes = plt.subplots(1, len(runs), figsize=(2.2 * len(runs), 3), sharey=True)
    for ax, r in zip(axes, runs, strict=True):
        seen = np.arange(1, len(r.losses) + 1) * r.batch_size / n_train
        if len(r.losses) > 5000:  # tens of thousands of points: dots, so density shows
            ax.plot(seen, r.losses, ",", alpha=0.15)
        else:
            ax.plot(seen, r.losses, lw=0.5)
        window = max(1, len(r.losses) // 50)  # the trend: a moving average over 2% of the run
        trend = np.convolve(r.losses, np.ones(window) / window, mode="valid")
        ax.plot(seen[window - 1 :], trend, color="C1", lw=1)
        ax.set_title(f"batch {r.batch_size}", fontsize=9)
        ax.set_xlabel("epochs")
        ax.set_ylim(0, 3)
    axes[0].set_ylabel("batch loss")
    fig.subplots_adjust(left=0.06, right=0.99, top=0.88, bottom=0.17, wspace=0.08)
    path = ctx.figure("batch_loss_curves")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    sizes = [r.batch_size for r in runs]
    ax.semilogx(sizes, [100 * r.test_accuracy for r in runs], "o-", base=2, color="C0")
    ax.set_xlabel("batch size")
    ax.set_ylabel("test accuracy (%)", color="C0")
    twin = ax.twinx()
    twin.semilogy(sizes, [r.seconds_per_epoch for r in runs], "s--", color="C1")
    twin.set_ylabel("seconds per epoch", color="C1")
    path = ctx.figure("batch_size")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)
