"""learning-rate: too small, right, too large; found by a range test, checked by a sweep.

1. A learning-rate range test (Smith, 2017): one epoch of plain SGD on the
   784-128-10 MLP while the rate grows exponentially from 1e-4 to 100, one step
   per batch. The loss first barely moves (the rate is too small), then falls
   fastest, then turns and explodes. The run stops when the smoothed loss exceeds
   four times its minimum (or becomes NaN/inf): that rate is the divergence point,
   and a rate ten times below the one with the lowest loss is the usual choice.
2. A sweep: the same network trained from the same start at fixed rates from
   1e-3 to 10. A run whose loss becomes NaN/inf is stopped by ``fit`` and marked
   diverged, and so is one that ends above the loss it started from, or one whose
   loss blew up (a batch over four times the start) and that ends no better than
   guessing the class frequencies. A ReLU network pushed that far is left with dead
   units, predicting the same for every image at a finite loss near ``ln 10``,
   below where it started: "finite" is not "fine". None of it crashes.
3. Why a rate can be too large, on a 2-D surface: gradient descent on the
   elongated quadratic ``f(w) = (a w1^2 + b w2^2) / 2``, with curvatures ``a < b``.
   Each step multiplies the distance to the minimum along each axis by
   ``|1 - lr * curvature|``, so the steep axis decides: the iteration converges if
   and only if ``lr < 2 / b``, and is fastest at ``lr = 2 / (a + b)``. Below that the
   flat axis crawls; above ``2 / b`` the steep axis overshoots further every step.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from handgrad import nn, optim
from handgrad.callbacks import Callback
from handgrad.data import load_mnist
from handgrad.optim import lr_scheduler
from handgrad.recipes import build_mlp
from handgrad.studies._base import Context, Report, Table, pyplot
from handgrad.train import evaluate, fit

Data = tuple[np.ndarray, np.ndarray]


# -- 1. the range test -----------------------------------------------------------


class RangeRecorder(Callback):
    """Records each batch's loss and stops once the smoothed loss exceeds ``factor``
    times its minimum (an exponential moving average, bias-corrected)."""

    def __init__(self, factor: float = 4.0, beta: float = 0.9) -> None:
        self.factor, self.beta = factor, beta
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self._avg = 0.0

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        loss = float(logs["loss"])
        self.losses.append(loss)
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        self.smoothed.append(self._avg / (1 - self.beta ** len(self.losses)))
        if self.smoothed[-1] > self.factor * min(self.smoothed):
            self.trainer.request_stop("loss above 4x its minimum", immediately=True)


@dataclass
class RangeTest:
    """Rates and losses of a range test; where the loss was lowest and where it diverged."""

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    best_lr: float  # the rate with the lowest smoothed loss
    diverged_lr: float | None  # the first rate at which the run diverged
    reason: str | None  # "loss above 4x its minimum" or "non-finite loss ..."

    @property
    def suggested_lr(self) -> float:
        return self.best_lr / 10


def range_test(
    data: Data,
    *,
    init_seed: int,
    order_seed: int,
    lr_min: float = 1e-4,
    lr_max: float = 100.0,
    batch_size: int = 64,
) -> RangeTest:
    """One epoch of SGD with the rate growing by a constant factor per batch,
    ``lr_min`` at the first batch to ``lr_max`` at the last."""
    x, y = data
    steps = math.ceil(len(x) / batch_size)
    model = build_mlp(784, [128], 10, rng=np.random.default_rng(init_seed))
    optimizer = optim.SGD(model.parameters(), lr=lr_min)
    gamma = (lr_max / lr_min) ** (1 / max(1, steps - 1))
    scheduler = lr_scheduler.ExponentialLR(optimizer, gamma)
    record = RangeRecorder()
    with warnings.catch_warnings():  # a non-finite loss is the divergence we look for
        warnings.simplefilter("ignore", RuntimeWarning)
        history = fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            (x, y),
            epochs=1,
            batch_size=batch_size,
            rng=np.random.default_rng(order_seed),
            scheduler=scheduler,
            scheduler_interval="batch",
            callbacks=[record],
            verbose=0,
        )
    done = len(record.losses)  # batches whose loss was finite
    lrs = lr_min * gamma ** np.arange(steps)  # the rate of each batch's update
    smoothed = np.asarray(record.smoothed)
    diverged_lr, reason = None, history.stop_reason
    if reason is not None:
        # The loss of batch k shows the update of batch k - 1: with a recorded loss too
        # high, the last update before it; with a non-finite one (not recorded), the last.
        blamed = done - 2 if reason.startswith("loss") else done - 1
        diverged_lr = float(lrs[max(0, blamed)])
        reason = reason if reason.startswith("loss") else "non-finite loss"
    return RangeTest(
        lrs[:done],
        np.asarray(record.losses),
        smoothed,
        float(lrs[int(np.argmin(smoothed))]),
        diverged_lr,
        reason,
    )


# -- 2. the sweep ---------------------------------------------------------------------


class BatchLosses(Callback):
    """Records the loss of every training batch."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        self.losses.append(float(logs["loss"]))


def guessing_loss(y: np.ndarray) -> float:
    """The cross-entropy of always predicting the class frequencies, ``-sum p log p``:
    the best a network that ignores its input can do (``ln 10`` for balanced digits)."""
    p = np.bincount(y) / len(y)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@dataclass
class SweepRun:
    lr: float
    start_loss: float  # the loss of the initial weights on the training data
    guessing_loss: float  # the loss of predicting the class frequencies
    epoch_losses: list[float]  # mean training loss of each epoch
    batch_losses: list[float]
    accuracy: float | None  # training accuracy of the last epoch
    stop_reason: str | None

    @property
    def non_finite(self) -> bool:
        return self.stop_reason is not None and self.stop_reason.startswith("non-finite")

    @property
    def peak(self) -> float:
        return max(self.batch_losses, default=math.inf)

    @property
    def diverged(self) -> bool:
        """NaN/inf; a final loss above the start; or a blow-up (a batch's loss over four
        times the start) after which the network is no better than guessing."""
        if self.non_finite or not self.epoch_losses:
            return True
        final = self.epoch_losses[-1]
        blew_up = self.peak > 4 * self.start_loss and final >= self.guessing_loss
        return final > self.start_loss or blew_up


def sweep_one(
    lr: float, data: Data, *, init_seed: int, order_seed: int, epochs: int, batch_size: int = 64
) -> SweepRun:
    """Plain SGD at a fixed ``lr`` from weights ``init_seed``, batches from ``order_seed``."""
    model = build_mlp(784, [128], 10, rng=np.random.default_rng(init_seed))
    start_loss = evaluate(model, nn.CrossEntropyLoss(), *data)["loss"]
    record = BatchLosses()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        history = fit(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(model.parameters(), lr=lr),
            data,
            epochs=epochs,
            batch_size=batch_size,
            rng=np.random.default_rng(order_seed),
            callbacks=[record],
            verbose=0,
        )
    acc = history.history.get("accuracy")
    return SweepRun(
        lr,
        start_loss,
        guessing_loss(data[1]),
        history.history.get("loss", []),
        record.losses,
        acc[-1] if acc else None,
        history.stop_reason,
    )


def sweep_status(run: SweepRun) -> str:
    if run.non_finite:
        assert run.stop_reason is not None
        where = run.stop_reason.split(":")[0].split(" at ")[-1]
        return f"diverged: NaN/inf at {where}"
    if run.diverged:
        return f"diverged: a batch's loss hit {run.peak:.3g} (start {run.start_loss:.2f})"
    if run.epoch_losses[-1] >= run.guessing_loss:
        return "too slow: no better than guessing yet"
    return "ok"


# -- 3. gradient descent on a 2-D quadratic --------------------------------------------


@dataclass
class Descent:
    lr: float
    path: np.ndarray  # (steps + 1, 2), or fewer rows if it diverged
    values: np.ndarray  # f at each point of the path
    converged_at: int | None  # first step with f below tol * f(start)
    diverged_at: int | None  # first step with f above 1e6 * f(start) (or not finite)


def quadratic(w: np.ndarray, curvatures: tuple[float, float]) -> float:
    return 0.5 * float(curvatures[0] * w[0] ** 2 + curvatures[1] * w[1] ** 2)


def descend(
    lr: float,
    curvatures: tuple[float, float],
    start: tuple[float, float],
    steps: int,
    tol: float = 1e-6,
) -> Descent:
    """Gradient descent with ``optim.SGD`` on one 2-vector parameter; the gradient of
    the quadratic, ``(a w1, b w2)``, is written into ``param.grad`` by hand."""
    param = nn.Parameter(np.array(start, dtype=np.float64))
    optimizer = optim.SGD([param], lr=lr)
    scale = np.array(curvatures)
    f0 = quadratic(param.data, curvatures)
    path, values = [param.data.copy()], [f0]
    converged_at = diverged_at = None
    for step in range(1, steps + 1):
        param.grad[...] = scale * param.data  # (2,)
        optimizer.step()
        f = quadratic(param.data, curvatures)
        path.append(param.data.copy())
        values.append(f)
        if converged_at is None and f < tol * f0:
            converged_at = step
        if not math.isfinite(f) or f > 1e6 * f0:
            diverged_at = step
            break
    return Descent(lr, np.array(path), np.array(values), converged_at, diverged_at)


def descent_status(d: Descent) -> str:
    if d.diverged_at is not None:
        return f"diverged at step {d.diverged_at}"
    if d.converged_at is not None:
        return f"converged in {d.converged_at} steps"
    return f"not converged in {len(d.values) - 1} steps"


def contraction(lr: float, curvatures: tuple[float, float]) -> float:
    """The factor by which a step shrinks the slowest direction: ``max |1 - lr c|``."""
    return max(abs(1 - lr * c) for c in curvatures)


# -- the study ----------------------------------------------------------------------


def run(ctx: Context) -> Report:
    report = Report("learning-rate", "Learning rates: a range test, a sweep, and a 2-D surface")
    rng = ctx.rng()
    mnist = load_mnist()
    n_range, n_sweep, epochs = ctx.pick((3000, 2000, 1), (20000, 10000, 2))
    order = rng.permutation(len(mnist.x_train))
    range_data = (mnist.x_train[order[:n_range]], mnist.y_train[order[:n_range]])
    sweep_data = (mnist.x_train[order[:n_sweep]], mnist.y_train[order[:n_sweep]])
    init_seed, order_seed = (int(s) for s in rng.integers(2**32, size=2))

    # 1. range test
    test = range_test(range_data, init_seed=init_seed, order_seed=order_seed)
    div = f"{test.diverged_lr:.3g}" if test.diverged_lr is not None else "-"
    report.tables.append(
        Table(
            ["range test", "batches", "lowest loss at lr", "suggested lr", "diverged at lr", "how"],
            [
                [
                    f"SGD, lr 1e-4 -> 100 over {n_range} images",
                    str(len(test.losses)),
                    f"{test.best_lr:.3g}",
                    f"{test.suggested_lr:.3g}",
                    div,
                    test.reason or "did not diverge",
                ]
            ],
        )
    )

    # 2. sweep
    rates = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0]
    runs = [
        sweep_one(lr, sweep_data, init_seed=init_seed, order_seed=order_seed, epochs=epochs)
        for lr in ctx.progress(rates, "learning-rate sweep", total=len(rates))
    ]
    rows = []
    for r in runs:
        loss = f"{r.epoch_losses[-1]:.4f}" if r.epoch_losses else "-"
        acc = f"{100 * r.accuracy:.1f}%" if r.accuracy is not None and not r.non_finite else "-"
        rows.append([f"{r.lr:g}", f"{r.peak:.3g}", loss, acc, sweep_status(r)])
    report.tables.append(
        Table(
            ["lr", "highest batch loss", "final loss", "train accuracy", "status"],
            rows,
            f"plain SGD, 784-128-10 MLP, {n_sweep} images, batch 64, {epochs} epoch(s), "
            f"same start and batches; loss at the start {runs[0].start_loss:.3f}, of "
            f"guessing the class frequencies {runs[0].guessing_loss:.3f}",
        )
    )

    # 3. the 2-D quadratic
    curvatures, start, steps = (1.0, 10.0), (-4.0, 1.5), 100
    limit = 2 / curvatures[1]
    surface_rates = {
        "small": 0.1 * limit,
        "best": 2 / sum(curvatures),
        "near the limit": 0.95 * limit,
        "too large": 1.05 * limit,
    }
    descents = {name: descend(lr, curvatures, start, steps) for name, lr in surface_rates.items()}
    rows = []
    for name, d in descents.items():
        rows.append(
            [
                name,
                f"{d.lr:.3f}",
                f"{d.lr / limit:.2f}",
                f"{contraction(d.lr, curvatures):.3f}",
                f"{d.values[-1]:.3g}",
                descent_status(d),
            ]
        )
    report.tables.append(
        Table(
            ["rate", "lr", "lr / (2/b)", "max |1 - lr c|", "final f", "gradient descent"],
            rows,
            f"f(w) = (w1^2 + 10 w2^2) / 2 from {start}: converges iff lr < 2/b = {limit:.2f}; "
            f"converged = f below 1e-6 of its start, diverged = above 1e6 times it",
        )
    )

    report.numbers.update(
        range_test=test,
        sweep={r.lr: r for r in runs},
        descents=descents,
        surface_limit=limit,
        n_range=n_range,
        n_sweep=n_sweep,
    )
    _findings(report, test, runs, descents, limit, curvatures)
    report.figures += _figures(ctx, test, runs, descents, curvatures)
    return report


def _findings(
    report: Report,
    test: RangeTest,
    runs: list[SweepRun],
    descents: dict[str, Descent],
    limit: float,
    curvatures: tuple[float, float],
) -> None:
    if test.diverged_lr is not None:
        report.findings.append(
            f"The range test's loss was lowest at lr {test.best_lr:.3g} and diverged at lr "
            f"{test.diverged_lr:.3g} ({test.reason}); a tenth of the best, "
            f"{test.suggested_lr:.3g}, is the usual pick."
        )
    else:
        report.findings.append(f"The range test did not diverge up to lr {test.lrs[-1]:.3g}.")
    ok = [r for r in runs if not r.diverged]
    bad = [r for r in runs if r.diverged]
    if ok:
        best = min(ok, key=lambda r: r.epoch_losses[-1])
        report.findings.append(
            f"In the sweep the lowest final loss is at lr {best.lr:g} "
            f"({best.epoch_losses[-1]:.3f}); the smallest rate, {runs[0].lr:g}, ends at "
            f"{runs[0].epoch_losses[-1]:.3f}: too small a rate is slow, not wrong."
        )
    if bad:
        nan = [f"{r.lr:g}" for r in bad if r.non_finite]
        high = [f"{r.lr:g}" for r in bad if not r.non_finite]
        parts = []
        if nan:
            parts.append(f"NaN/inf at lr {', '.join(nan)} (stopped by fit)")
        if high:
            parts.append(f"the loss blew up at lr {', '.join(high)}")
        smallest = min(r.lr for r in bad)
        report.findings.append(
            f"Divergence detected in the sweep: {'; '.join(parts)}. The smallest diverging "
            f"rate, {smallest:g}, is "
            + (
                f"{smallest / test.diverged_lr:.2g} times the range test's divergence point."
                if test.diverged_lr is not None
                else "beyond what the range test reached."
            )
        )
    else:
        report.findings.append("No rate of the sweep diverged.")
    converged = [n for n, d in descents.items() if d.converged_at is not None]
    diverged = [n for n, d in descents.items() if d.diverged_at is not None]
    report.findings.append(
        f"On the quadratic (convergence iff lr < 2/b = {limit:.2f}), gradient descent "
        f"converged at the rates {', '.join(converged) or '(none)'} and diverged at "
        f"{', '.join(diverged) or '(none)'}."
    )
    if converged:
        fastest = min(converged, key=lambda n: descents[n].converged_at or 0)
        factors = {n: contraction(d.lr, curvatures) for n, d in descents.items()}
        tightest = min(factors, key=lambda n: factors[n])
        report.findings.append(
            f"The fastest to converge, {fastest} ({descents[fastest].converged_at} steps), "
            + (
                f"is the rate with the smallest contraction factor max |1 - lr c| "
                f"({factors[fastest]:.3f}), as the theory says."
                if fastest == tightest
                else f"is not the rate with the smallest contraction factor ({tightest})."
            )
        )


def _figures(
    ctx: Context,
    test: RangeTest,
    runs: list[SweepRun],
    descents: dict[str, Descent],
    curvatures: tuple[float, float],
) -> list:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    a1.plot(test.lrs, test.losses, color="0.7", lw=0.8, label="batch loss")
    a1.plot(test.lrs, test.smoothed, color="C0", label="smoothed")
    a1.axvline(test.suggested_lr, color="C2", ls="--", label=f"suggested {test.suggested_lr:.2g}")
    if test.diverged_lr is not None:
        a1.axvline(test.diverged_lr, color="C3", ls=":", label=f"diverged {test.diverged_lr:.2g}")
    a1.set_xscale("log")
    a1.set_ylim(0, 1.6 * float(test.smoothed[0]))  # the divergence runs off the top
    a1.set(xlabel="learning rate", ylabel="training loss", title="Range test (one epoch)")
    a1.legend(fontsize=8)
    ok = [r for r in runs if not r.diverged]
    a2.plot(
        [r.lr for r in ok], [r.epoch_losses[-1] for r in ok], "o-", color="C0", label="final loss"
    )
    top = 1.5 * max([r.start_loss for r in runs] + [r.epoch_losses[-1] for r in ok])
    bad = [r.lr for r in runs if r.diverged]
    if bad:  # drawn at the top edge: the loss itself is off the scale (or NaN)
        a2.plot(bad, [top] * len(bad), "x", color="C3", ms=10, mew=2, label="diverged")
    a2.axhline(runs[0].start_loss, color="0.6", ls="--", lw=0.8, label="loss at the start")
    a2.set_xscale("log")
    a2.set_ylim(0, 1.05 * top)
    a2.set(
        xlabel="learning rate",
        ylabel="training loss after the last epoch",
        title="Sweep: plain SGD at fixed rates",
    )
    a2.legend(fontsize=8, loc="center left")
    range_path = ctx.figure("lr_range_test")
    fig.savefig(range_path, dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(
        1, len(descents), figsize=(3.2 * len(descents), 3.2), layout="constrained"
    )
    g1, g2 = np.meshgrid(np.linspace(-5, 5, 200), np.linspace(-3, 3, 200))
    f = 0.5 * (curvatures[0] * g1**2 + curvatures[1] * g2**2)
    for ax, (name, d) in zip(axes, descents.items(), strict=True):
        ax.contour(g1, g2, f, levels=np.geomspace(0.05, 60, 12), cmap="Blues_r", linewidths=0.8)
        ax.plot(d.path[:, 0], d.path[:, 1], ".-", color="C3", lw=0.8, ms=3)
        ax.plot(0, 0, "k*", ms=8)
        ax.set_title(f"{name}: lr {d.lr:.3f}\n{descent_status(d)}", fontsize=9)
        ax.set_xlim(-5, 5)
        ax.set_ylim(-3, 3)
    surface_path = ctx.figure("lr_surface")
    fig.savefig(surface_path, dpi=100)
    plt.close(fig)
    return [range_path, surface_path]
