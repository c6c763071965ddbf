"""course-mlp: the course notebook's network, its challenge and its exercise.

The notebook trains a 784-256-128-10 ReLU network with plain SGD (learning rate
0.1, batches of 64) for 10 epochs and promises more than 95% test accuracy; the
study reports what it gets. Its challenge adds momentum 0.9, which averages the
gradients of the last ~10 steps (``v <- 0.9 v + g; w <- w - lr v``), so each
step goes further along directions the gradients agree on. Its exercise sweeps
the learning rate over 0.001, 0.01, 0.1 and 1.0 (and 10): too small and 10
epochs are not enough, too large and the steps overshoot. Divergence is detected
two ways and reported in the table, never a crash: a loss that becomes NaN or
infinite (``fit``'s guard stops the run and restores the weights the epoch began with),
and a batch loss above ``3 ln 10``, three times that of a uniform guess, after
which the ReLUs are often dead and the loss never comes back. A run that ends
no better than chance (``ln 10``) is reported as failed. Every run starts from
the same initial weights and sees the batches in the same order.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import numpy as np

from handgrad import nn, optim
from handgrad.callbacks import Callback
from handgrad.data import load_mnist
from handgrad.recipes import build_mlp
from handgrad.studies._base import Context, Report, Table, pyplot
from handgrad.train import History, fit

RATES = (0.001, 0.01, 0.1, 1.0, 10.0)
CHANCE_LOSS = math.log(10)  # cross-entropy of a uniform guess over 10 classes
BLOW_UP = 3 * CHANCE_LOSS  # a batch loss above this: the steps overshot


class BatchLosses(Callback):
    """Keeps the loss of every training batch (fit's logs only hold epoch means)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        self.losses.append(logs["loss"])


@dataclass(frozen=True)
class Run:
    """One training run: its per-epoch history, its batch losses, and how it ended."""

    history: History
    batch_losses: list[float]

    @property
    def non_finite(self) -> bool:
        return (self.history.stop_reason or "").startswith("non-finite")

    @property
    def peak_loss(self) -> float:
        return max(self.batch_losses, default=math.nan)

    @property
    def diverged(self) -> bool:
        """A NaN or infinite loss (fit stopped the run), or a batch loss that blew up."""
        return self.non_finite or self.peak_loss > BLOW_UP

    @property
    def failed(self) -> bool:
        losses = self.history.history.get("loss", [])
        return not losses or losses[-1] >= CHANCE_LOSS

    @property
    def test_accuracy(self) -> float:
        accuracy = self.history.history.get("val_accuracy", [])
        return accuracy[-1] if accuracy else math.nan

    def status(self) -> str:
        if self.non_finite:
            where = (self.history.stop_reason or "").split(":")[0]  # "non-finite loss (nan) at ..."
            return f"diverged: {where}"
        if self.diverged:
            final = self.history["loss"][-1]
            return f"diverged: a batch loss of {self.peak_loss:.3g}, ends at {final:.3g}"
        if self.failed:
            return "failed: loss no better than chance"
        return "trained"


def train_course_mlp(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    lr: float,
    momentum: float,
    epochs: int,
    rng: np.random.Generator,
) -> Run:
    """784-256-128-10 ReLU, cross-entropy, SGD(lr, momentum), batch 64; test set as val."""
    model = build_mlp(784, [256, 128], 10, rng=rng)
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    batches = BatchLosses()
    with warnings.catch_warnings():
        # fit warns when it stops a diverging run; the table reports it instead
        warnings.simplefilter("ignore", RuntimeWarning)
        history = fit(
            model, nn.CrossEntropyLoss(), optimizer, train, test,
            epochs=epochs, batch_size=64, rng=rng, callbacks=[batches], verbose=0,
        )  # fmt: skip
    return Run(history, batches.losses)


def run(ctx: Context) -> Report:
    report = Report("course-mlp", "The course's MLP: SGD, momentum, and the learning rate")
    data = load_mnist()
    n_train, n_test = ctx.pick(3000, 60000), ctx.pick(1000, 10000)
    epochs = ctx.pick(5, 10)
    pick = ctx.rng()
    tr = np.sort(pick.permutation(len(data.y_train))[:n_train])
    te = np.sort(pick.permutation(len(data.y_test))[:n_test])
    train, test = (data.x_train[tr], data.y_train[tr]), (data.x_test[te], data.y_test[te])

    configs = {"SGD lr 0.1": (0.1, 0.0), "SGD lr 0.1, momentum 0.9": (0.1, 0.9)}
    configs |= {f"SGD lr {lr:g}": (lr, 0.0) for lr in RATES if lr != 0.1}
    start = ctx.rng()  # every run: the same initial weights and batch order
    runs: dict[str, Run] = {}
    for name, (lr, momentum) in ctx.progress(configs.items(), "course-mlp", total=len(configs)):
        rng = copy.deepcopy(start)
        runs[name] = train_course_mlp(train, test, lr=lr, momentum=momentum, epochs=epochs, rng=rng)

    def row(name: str) -> list[str]:
        r = runs[name]
        loss = r.history.history.get("loss", [math.nan])[-1]
        return [
            name,
            str(r.history.epochs),
            "-" if math.isnan(loss) else f"{loss:.4g}",
            "-" if math.isnan(r.test_accuracy) else f"{r.test_accuracy:.2%}",
            f"{sum(r.history.history.get('seconds', [])):.1f} s",
            r.status(),
        ]

    head = ["run", "epochs", "train loss", "test accuracy", "time", "status"]
    size = f"{n_train:,} training images, {n_test:,} test images, batch 64, {epochs} epochs"
    report.tables.append(
        Table(
            head,
            [row("SGD lr 0.1"), row("SGD lr 0.1, momentum 0.9")],
            f"784-256-128-10 ReLU, He-uniform initialisation; {size}",
        )
    )
    sweep = [f"SGD lr {lr:g}" for lr in RATES]
    report.tables.append(
        Table(
            ["learning rate", *head[1:]],
            [[f"{lr:g}", *row(name)[1:]] for lr, name in zip(RATES, sweep, strict=True)],
            f"the exercise: plain SGD at each learning rate ({size}); 10 is added to the "
            "course's four; diverged = a non-finite loss (fit stops the run) or a batch loss "
            f"above 3 ln 10 = {BLOW_UP:.2f}",
        )
    )
    report.numbers.update(
        test_accuracy={name: r.test_accuracy for name, r in runs.items()},
        final_loss={
            name: r.history.history.get("loss", [math.nan])[-1] for name, r in runs.items()
        },
        diverged=[lr for lr, name in zip(RATES, sweep, strict=True) if runs[name].diverged],
        failed=[lr for lr, name in zip(RATES, sweep, strict=True) if runs[name].failed],
        epochs_run={name: r.history.epochs for name, r in runs.items()},
    )

    base, mom = runs["SGD lr 0.1"], runs["SGD lr 0.1, momentum 0.9"]
    promise = "meets" if base.test_accuracy > 0.95 else "does not meet"
    promise += " the course's promise of more than 95%"
    if ctx.quick:  # a reduced run says nothing about the promise of the full one
        promise = (
            f" in this --quick run ({n_train:,} images, {epochs} epochs), which does not test "
            "the course's promise of more than 95% (60,000 images, 10 epochs)"
        )
    else:
        promise = f", which {promise}"
    report.findings.append(
        f"Plain SGD reaches {base.test_accuracy:.2%} test accuracy{promise}; "
        f"momentum 0.9 reaches {mom.test_accuracy:.2%} "
        f"({mom.test_accuracy - base.test_accuracy:+.2%})."
    )
    best = max(RATES, key=lambda lr: np.nan_to_num(runs[f"SGD lr {lr:g}"].test_accuracy))
    diverged = [
        f"{lr:g} ({runs[f'SGD lr {lr:g}'].status().removeprefix('diverged: ')})"
        for lr in report.numbers["diverged"]
    ]
    report.findings.append(
        f"Of the learning rates, {best:g} gives the best test accuracy; "
        + ("diverged: " + "; ".join(diverged) if diverged else "none diverged")
        + "."
    )
    slow = runs["SGD lr 0.001"]
    report.findings.append(
        f"At 0.001 the loss is still {slow.history['loss'][-1]:.3f} after {epochs} epochs "
        f"(0.1: {base.history['loss'][-1]:.3f}): steps too small, not a wrong model."
    )

    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for name, r in runs.items():
        if r.non_finite or not r.history.epochs:  # its last loss would flatten the others
            ax_loss.plot([], [], "x", label=f"{name}: diverged, not drawn")
            continue
        x = np.arange(1, r.history.epochs + 1)
        style = "-" if "momentum" in name or name == "SGD lr 0.1" else "--"
        ax_loss.semilogy(x, r.history["loss"], style, marker="o", ms=3, label=name)
        ax_acc.plot(x, r.history["val_accuracy"], style, marker="o", ms=3, label=name)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.xaxis.get_major_locator().set_params(integer=True)
    ax_acc.xaxis.get_major_locator().set_params(integer=True)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy")
    ax_acc.axhline(0.95, color="k", lw=0.8, ls=":")
    ax_loss.legend(fontsize=7)
    fig.suptitle("784-256-128-10 MLP on MNIST")
    path = ctx.figure("course_mlp")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)
    return report
