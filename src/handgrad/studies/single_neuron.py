"""single-neuron: what one neuron can and cannot learn.

1. A perceptron (step activation, the perceptron rule) learns AND and OR in a few
   epochs and never learns XOR. The rule with integer inputs and a step of 1 keeps
   integer weights, so its state after each epoch is a point of a lattice; when the
   state repeats, the run is provably a cycle that will never end. For XOR the study
   detects that repetition, and the reason is arithmetic: outputs 1 for (1, 0) and
   (0, 1) need ``w1 + b > 0`` and ``w2 + b > 0``, outputs 0 for (0, 0) and (1, 1)
   need ``b <= 0`` and ``w1 + w2 + b <= 0``; adding the first two gives
   ``w1 + w2 + 2b > 0``, so ``w1 + w2 + b > -b >= 0``: a contradiction.
2. A sigmoid neuron trained with gradient descent on cross-entropy is logistic
   regression: it reaches the maximum-likelihood weights that Newton's method
   (iteratively reweighted least squares) finds.
3. A linear neuron trained on squared error reaches the least-squares solution of
   ``numpy.linalg.lstsq``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handgrad import nn, optim
from handgrad.data.synthetic import make_blobs
from handgrad.studies._base import Context, Report, Table, pyplot

GATES = {"AND": (0, 0, 0, 1), "OR": (0, 1, 1, 1), "XOR": (0, 1, 1, 0)}
INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])


@dataclass(frozen=True)
class PerceptronRun:
    """The weights the rule ended with, the epochs it ran, whether every sample is
    right, and the two epochs after which the state was the same (a proof that the
    rule cycles forever), if it found them."""

    w: np.ndarray
    b: int
    epochs: int
    learned: bool
    cycle: tuple[int, int] | None


def perceptron(x: np.ndarray, y: np.ndarray, max_epochs: int = 100) -> PerceptronRun:
    """Train ``step(x w + b)`` with the perceptron rule ``w += (y - yhat) x``, from zero."""
    w, b = np.zeros(x.shape[1], dtype=np.int64), 0
    seen = {(tuple(w), b): 0}
    for epoch in range(1, max_epochs + 1):
        mistakes = 0
        for xi, yi in zip(x, y, strict=True):
            error = int(yi) - int(xi @ w + b > 0)
            if error:
                w, b, mistakes = w + error * xi, b + error, mistakes + 1
        if mistakes == 0:
            return PerceptronRun(w, b, epoch, True, None)
        state = (tuple(w), b)
        if state in seen:  # the same state, so the same epoch again: forever
            return PerceptronRun(w, b, epoch, False, (seen[state], epoch))
        seen[state] = epoch
    return PerceptronRun(w, b, max_epochs, False, None)


def logistic_newton(x: np.ndarray, y: np.ndarray, steps: int = 50) -> np.ndarray:
    """Maximum-likelihood logistic regression by Newton's method; returns ``(w..., b)``."""
    a = np.hstack([x, np.ones((len(x), 1))])
    theta = np.zeros(a.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-a @ theta))
        hessian = a.T @ (a * (p * (1 - p))[:, None])
        theta -= np.linalg.solve(hessian, a.T @ (p - y))
    return theta


def train_neuron(
    x: np.ndarray, target: np.ndarray, loss: nn.Loss, lr: float, steps: int
) -> np.ndarray:
    """One ``nn.Linear(D, 1)`` neuron, full-batch gradient descent in float64; ``(w..., b)``."""
    neuron = nn.Linear(x.shape[1], 1, dtype=np.float64, weight_init=lambda s, g, dtype: np.zeros(s))
    optimizer = optim.SGD(neuron.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(neuron(x), target)
        neuron.backward(loss.backward())
        optimizer.step()
    assert neuron.bias is not None
    return np.concatenate([neuron.weight.data[0], neuron.bias.data])


def run(ctx: Context) -> Report:
    report = Report("single-neuron", "One neuron: perceptron, sigmoid neuron, linear neuron")

    rows = []
    runs = {gate: perceptron(INPUTS, np.array(outputs)) for gate, outputs in GATES.items()}
    for gate, result in runs.items():
        if result.cycle is None:
            verdict = f"learned in {result.epochs} epochs"
        else:
            verdict = f"after epoch {result.cycle[1]} as after {result.cycle[0]}: cycles forever"
        rows.append([gate, f"w = {result.w.tolist()}, b = {result.b}", verdict])
        report.numbers[gate] = result
    report.tables.append(Table(["gate", "final weights", "perceptron rule"], rows))
    report.findings.append(
        "XOR is not linearly separable: (1,0) and (0,1) -> 1 need w1 + b > 0 and "
        "w2 + b > 0, (0,0) -> 0 needs b <= 0, so w1 + w2 + b > -b >= 0 and (1,1) -> 1: "
        "no line does it, and the perceptron rule provably cycles."
    )

    rng = ctx.rng()
    n = ctx.pick(200, 2000)
    x, y = make_blobs(n, [[-1.0, 0.0], [1.0, 0.5]], 1.0, rng, dtype=np.float64)
    exact = logistic_newton(x, y.astype(np.float64))
    steps = ctx.pick(3000, 6000)
    learned = train_neuron(x, y[:, None].astype(np.float64), nn.BCEWithLogitsLoss(), 1.0, steps)
    logistic_gap = float(np.max(np.abs(learned - exact)))

    a = rng.standard_normal((n, 3))
    t = a @ np.array([2.0, -1.0, 0.5]) + 0.3 + 0.1 * rng.standard_normal(n)
    lstsq = np.linalg.lstsq(np.hstack([a, np.ones((n, 1))]), t, rcond=None)[0]
    linear_steps = ctx.pick(1000, 2000)
    linear = train_neuron(a, t[:, None], nn.MSELoss(), 0.2, linear_steps)
    linear_gap = float(np.max(np.abs(linear - lstsq)))

    sigmoid_row = ["sigmoid", f"{steps} GD steps, cross-entropy", "Newton's method (IRLS)"]
    linear_row = ["linear", f"{linear_steps} GD steps, squared error", "numpy.linalg.lstsq"]
    report.tables.append(
        Table(
            ["neuron", "trained by", "matches", "max |difference|"],
            [[*sigmoid_row, f"{logistic_gap:.1e}"], [*linear_row, f"{linear_gap:.1e}"]],
        )
    )
    report.numbers.update(logistic_gap=logistic_gap, linear_gap=linear_gap)
    report.findings.append(
        "A sigmoid neuron with cross-entropy is logistic regression and a linear "
        "neuron with squared error is least squares: gradient descent reaches the same "
        "weights as the closed-form or second-order solvers."
    )

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(9, 3), layout="constrained")
    grid = np.linspace(-0.5, 1.5, 200)
    gx, gy = np.meshgrid(grid, grid)
    for ax, (gate, outputs) in zip(axes, GATES.items(), strict=True):
        w, b = runs[gate].w, runs[gate].b
        ax.contourf(gx, gy, (gx * w[0] + gy * w[1] + b > 0), levels=[-0.5, 0.5, 1.5],
                    colors=["#d6e4f4", "#f4d6d6"])  # fmt: skip
        ax.scatter(INPUTS[:, 0], INPUTS[:, 1], c=outputs, cmap="coolwarm", s=80, edgecolors="k")
        ax.set_title(f"{gate}: {'learned' if runs[gate].learned else 'cycles'}")
        ax.set_xticks([0, 1])
        ax.set_yticks([0, 1])
    path = ctx.figure("perceptron")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)
    return report
