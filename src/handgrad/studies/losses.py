"""losses: cross-entropy, squared error on one-hot targets, multiclass hinge and
focal loss, each training the same MNIST network from the same initial weights.

Everything but the loss is fixed: 784-128-10 ReLU, Adam, the same batches. Adam,
because it divides each step by the gradient's own running size, so the losses'
different scales (squared error is averaged over the 10 scores too) do not turn
into different learning rates: what differs is the *shape* of each gradient.

The gradient each loss sends back for one sample's scores ``s`` explains how it
trains:

- **cross-entropy** ``-log softmax(s)_t``: ``softmax(s) - onehot(t)``. Never zero,
  near its largest for a mistake, fading only as the right class's probability nears
  1, so it keeps pushing every sample towards probability 1.
- **squared error** ``mean((s - onehot(t))^2)``: ``2 (s - onehot(t)) / 10``. It
  pulls each score to exactly 0 or 1: a right score above 1 is pushed back down, the
  other scores are pulled to 0 however far below the right one they are, so effort
  goes to samples already classified right.
- **multiclass hinge** ``sum_{i != t} max(0, 1 - s_t + s_i) / 10``: exactly zero once
  the right score beats every other by the margin 1. Those samples stop
  contributing, as the points outside the margin of a support vector machine do.
- **focal** ``-(1 - p_t)^2 log p_t``: cross-entropy with each sample weighted down
  by ``(1 - p_t)^2``: well-classified samples hardly count, so the gradient
  concentrates on the hard ones (it was made for detectors swamped by easy
  background; MNIST's classes are balanced and few samples are hard).

The table measures that, at the end of training, on training images: the share of
samples whose gradient is exactly zero, and the share of the total gradient
(the sum of the per-sample gradient norms) that the 10% of samples with the
largest gradients carry.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from handgrad import nn, optim
from handgrad.callbacks import Callback
from handgrad.data import load_mnist
from handgrad.studies._base import Context, Report, Table, pyplot
from handgrad.train import fit, predict, predict_scores

# name -> (the loss, given a reduction; whether it takes one-hot targets)
LOSSES: dict[str, tuple[Callable[[str], nn.Loss], bool]] = {
    "cross-entropy": (lambda reduction: nn.CrossEntropyLoss(reduction=reduction), False),
    "MSE on one-hot": (lambda reduction: nn.MSELoss(reduction=reduction), True),
    "multiclass hinge": (lambda reduction: nn.MultiMarginLoss(reduction=reduction), False),
    "focal (gamma 2)": (lambda reduction: nn.FocalLoss(gamma=2.0, reduction=reduction), False),
}


def one_hot(y: np.ndarray, classes: int = 10) -> np.ndarray:
    """Integer labels ``(N,)`` -> float32 one-hot rows ``(N, classes)``."""
    return np.eye(classes, dtype=np.float32)[y]


class TestAccuracy(Callback):
    """The test accuracy after every epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y
        self.accuracy: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.accuracy.append(float(np.mean(predict(self.trainer.model, self.x) == self.y)))


def gradient_spread(
    loss: nn.Loss, scores: np.ndarray, target: np.ndarray, top: float = 0.1
) -> tuple[float, float]:
    """From the per-sample gradients of a ``reduction="sum"`` loss w.r.t. the scores:
    the share of samples whose gradient is exactly zero, and the share of the sum of
    gradient norms carried by the ``top`` fraction of samples with the largest ones."""
    loss.forward(scores, target)
    norms = np.sqrt((loss.backward().astype(np.float64) ** 2).sum(axis=1))  # (N,)
    zero = float(np.mean(norms == 0))
    k = max(1, round(top * len(norms)))
    total = norms.sum()
    share = float(np.sort(norms)[-k:].sum() / total) if total > 0 else 0.0
    return zero, share


@dataclass
class Run:
    """One loss: test accuracy after each epoch, time, and its gradient statistics."""

    name: str
    accuracy: list[float]
    seconds: float
    zero_gradient: float
    top_share: float
    stop_reason: str | None


def train_run(
    name: str,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    epochs: int,
    lr: float,
    init_seed: int,
    shuffle_seed: int,
) -> Run:
    """Train 784-128-10 with the loss ``LOSSES[name]``; same weights and batches for all."""
    x, y, x_test, y_test = data
    make_loss, wants_one_hot = LOSSES[name]
    target = one_hot(y) if wants_one_hot else y
    g = np.random.default_rng(init_seed)
    model = nn.Sequential(nn.Linear(784, 128, rng=g), nn.ReLU(), nn.Linear(128, 10, rng=g))
    curve = TestAccuracy(x_test, y_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # divergence is in stop_reason
        history = fit(model, make_loss("mean"), optim.Adam(model.parameters(), lr=lr),
                      (x, target), epochs=epochs, batch_size=64, rng=shuffle_seed,
                      callbacks=[curve], verbose=0)  # fmt: skip
    probe = slice(0, 5000)
    scores = predict_scores(model, x[probe])
    zero, share = gradient_spread(make_loss("sum"), scores, target[probe])
    # a run that diverged in its first epoch has no epoch-end accuracy: measure the weights
    # fit restored
    accuracy = curve.accuracy or [float(np.mean(predict(model, x_test) == y_test))]
    seconds = sum(history.history.get("seconds", []))
    return Run(name, accuracy, seconds, zero, share, history.stop_reason)


def run(ctx: Context) -> Report:
    report = Report("losses", "Losses: cross-entropy, MSE on one-hot, multiclass hinge, focal")
    n_train, epochs, lr = ctx.pick(5000, 60000), ctx.pick(2, 5), 1e-3
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
        train_run(name, data, epochs=epochs, lr=lr, init_seed=init_seed, shuffle_seed=shuffle_seed)
        for name in ctx.progress(LOSSES, "losses", total=len(LOSSES))
    ]
    rows = []
    for r in runs:
        diverged = bool(r.stop_reason and r.stop_reason.startswith("non-finite"))
        rows.append([
            r.name, f"{100 * r.accuracy[0]:.1f}%" if r.accuracy else "-",
            f"{100 * r.accuracy[-1]:.1f}%" if r.accuracy else "-",
            f"{100 * r.zero_gradient:.1f}%", f"{100 * r.top_share:.1f}%",
            "diverged" if diverged else "trained",
        ])  # fmt: skip
    report.tables.append(Table(
        ["loss", "test acc, epoch 1", f"test acc, epoch {epochs}", "zero gradient",
         "gradient share of top 10%", "run"],
        rows,
        f"784-128-10 ReLU, Adam lr {lr}, batch 64, {epochs} epochs on {n_train} MNIST training "
        f"images, the same initial weights and batches for every loss; tested on {n_test}; "
        "gradient statistics at the end, on 5000 training images",
    ))  # fmt: skip
    by_name = {r.name: r for r in runs}
    report.numbers.update(runs=by_name)
    _findings(report, by_name)
    _figure(ctx, report, runs)
    return report


def _findings(report: Report, runs: dict[str, Run]) -> None:
    ce, mse = runs["cross-entropy"], runs["MSE on one-hot"]
    hinge, focal = runs["multiclass hinge"], runs["focal (gamma 2)"]
    best = max(runs.values(), key=lambda r: r.accuracy[-1])
    report.findings.append(
        f"{best.name} ends with the best test accuracy, {100 * best.accuracy[-1]:.1f}%; "
        + ", ".join(f"{r.name} {100 * r.accuracy[-1]:.1f}%" for r in runs.values() if r is not best)
        + "."
    )
    report.findings.append(
        f"Cross-entropy's gradient, softmax - onehot, is zero for none of the samples "
        f"({100 * ce.zero_gradient:.0f}%) and fades only as the right class's probability "
        "nears 1; for a mistake it is near its largest, so it keeps pushing every sample "
        "towards probability 1."
    )
    report.findings.append(
        "MSE on one-hot targets pulls every score to exactly 0 or 1: a right score above 1 is "
        "pushed back down and the other scores are pulled to 0 however far below the right "
        "one they are, so effort goes to samples already classified right: its top 10% of "
        f"samples carry {100 * mse.top_share:.0f}% of its gradient against "
        f"{100 * ce.top_share:.0f}% for cross-entropy, and it ends "
        f"{100 * (mse.accuracy[-1] - ce.accuracy[-1]):+.1f} points from cross-entropy."
    )
    report.findings.append(
        f"The multiclass hinge is satisfied once the right score leads by the margin: "
        f"{100 * hinge.zero_gradient:.0f}% of the training samples send no gradient at all, "
        "and only the ones near or across the boundary are learned from, as in a support "
        "vector machine."
    )
    report.findings.append(
        f"Focal loss weights each sample by (1 - p_t)^2: its top 10% carry "
        f"{100 * focal.top_share:.0f}% of the gradient (cross-entropy: {100 * ce.top_share:.0f}%); "
        "on balanced MNIST, where few samples are hard, that focus changes the accuracy by "
        f"{100 * (focal.accuracy[-1] - ce.accuracy[-1]):+.1f} points."
    )


def _figure(ctx: Context, report: Report, runs: list[Run]) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for r in runs:
        ax1.plot(np.arange(1, len(r.accuracy) + 1), [100 * a for a in r.accuracy], "o-",
                 label=r.name)  # fmt: skip
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("test accuracy (%)")
    ax1.legend()
    # each loss's gradient on one sample's right-class score, as that score grows
    # (the other nine scores at 0): how hard each loss still pushes
    s = np.linspace(-4, 6, 201)
    for name, (make_loss, wants_one_hot) in LOSSES.items():
        scores = np.zeros((len(s), 10))
        scores[:, 0] = s
        labels = np.zeros(len(s), dtype=np.int64)
        loss = make_loss("mean")  # as in training, times N: one sample's gradient
        loss.forward(scores, one_hot(labels).astype(np.float64) if wants_one_hot else labels)
        ax2.plot(s, -len(s) * loss.backward()[:, 0], label=name)
    ax2.set_xlabel("score of the right class (the others at 0)")
    ax2.set_ylabel("-dL/d(score): the push upwards")
    ax2.axhline(0, color="0.8", lw=0.8)
    ax2.legend()
    path = ctx.figure("losses")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)
