"""sanity: can the network learn at all? Toy problems first, then one batch.

Two checks to run before spending minutes on MNIST.

1. Toy problems a straight line cannot separate: XOR, two moons, three spirals.
   A small MLP should get them (nearly) all right, and the decision-boundary
   figure shows the curved boundary it drew; softmax regression, trained the
   same way, shows what a straight line manages.
2. Overfit one batch: 64 MNIST images, 200 steps of Adam. A network with 100,000
   parameters can memorise 64 examples, so a correct model, loss and optimizer
   drive the loss to (near) zero; one that cannot is broken, whatever its
   accuracy says. The study runs the check on a correct MLP and on four broken
   ones: every weight initialised to zero (the hidden units stay identical and
   dead), a softmax layer before the cross-entropy (the loss cannot go below
   ``log(1 + 9/e)`` even at 100% accuracy), a custom ReLU whose backward uses
   the inverted mask (wrong gradients), and an optimizer built on another
   model's parameters (nothing moves).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handgrad import nn, optim
from handgrad.data import load_mnist, make_moons, make_spirals, make_xor, train_val_split
from handgrad.nn.functional import softmax
from handgrad.recipes import build_mlp
from handgrad.studies._base import Context, Report, Table, pyplot
from handgrad.train import fit, predict

OVERFIT_LOSS = 0.01  # a model that cannot reach this on one batch is flagged as broken


def toy_problems(rng: np.random.Generator, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """XOR (noisy corners), two moons, three spirals: ``n`` points each, float32."""
    return {
        "XOR": make_xor(n, noise=0.15, rng=rng),
        "two moons": make_moons(n, 0.15, rng),
        "spirals": make_spirals(n, 3, 0.04, rng),
    }


def train_classifier(
    x: np.ndarray, y: np.ndarray, hidden: list[int], epochs: int, rng: np.random.Generator
) -> nn.Module:
    """An MLP with ReLU (``hidden=[]``: softmax regression), Adam lr 0.01, batch 32."""
    model = build_mlp(x.shape[1], hidden, int(y.max()) + 1, rng=rng)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        (x, y),
        epochs=epochs,
        batch_size=32,
        rng=rng,
        verbose=0,
    )
    return model


@dataclass(frozen=True)
class OverfitCheck:
    """The loss after each step on the one batch, the final accuracy, and the verdict."""

    losses: list[float]
    accuracy: float

    @property
    def final_loss(self) -> float:
        return self.losses[-1]

    @property
    def passed(self) -> bool:
        return self.final_loss < OVERFIT_LOSS


def overfit_one_batch(
    model: nn.Module, optimizer: optim.Optimizer, x: np.ndarray, y: np.ndarray, steps: int
) -> OverfitCheck:
    """Train on the batch ``(x, y)`` alone for ``steps`` steps and record the loss."""
    loss = nn.CrossEntropyLoss()
    losses = []
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        losses.append(loss(model(x), y))
        model.backward(loss.backward())
        optimizer.step()
    model.eval()
    scores = model(x)
    losses.append(loss(scores, y))
    return OverfitCheck(losses, float(np.mean(scores.argmax(axis=1) == y)))


class SoftmaxLayer(nn.Module):
    """A softmax as a layer: the bug of putting one in front of CrossEntropyLoss."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.p = softmax(x, axis=1)
        return self.p

    def backward(self, dout: np.ndarray) -> np.ndarray:
        p = self.p  # (N, C)
        return p * (dout - (dout * p).sum(axis=1, keepdims=True))


class InvertedMaskReLU(nn.Module):
    """A ReLU with a bug in backward: it lets through the gradient of the *negative* inputs."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x > 0
        return x * self.mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * ~self.mask  # should be dout * self.mask


def suspects(rng: np.random.Generator) -> dict[str, tuple[nn.Module, optim.Optimizer]]:
    """A correct 784-128-10 MLP and four broken ones, each with its Adam optimizer."""

    def mlp() -> nn.Sequential:
        return build_mlp(784, [128], 10, rng=rng)

    def adam(model: nn.Module) -> optim.Optimizer:
        return optim.Adam(model.parameters(), lr=1e-3)

    correct, zero, double, other, unrelated = mlp(), mlp(), mlp(), mlp(), mlp()
    for p in zero.parameters():
        p.data[...] = 0
    double.append(SoftmaxLayer())
    flipped = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 128, rng=rng), InvertedMaskReLU(), nn.Linear(128, 10, rng=rng)
    )
    return {
        "correct MLP": (correct, adam(correct)),
        "all weights zero": (zero, adam(zero)),
        "softmax before CrossEntropyLoss": (double, adam(double)),
        "ReLU backward with inverted mask": (flipped, adam(flipped)),
        "optimizer on another model's weights": (other, adam(unrelated)),
    }


def decision_boundaries(
    ctx: Context,
    problems: dict[str, tuple[np.ndarray, np.ndarray]],
    models: dict[str, dict[str, nn.Module]],
) -> Path:
    """One panel per problem and model: the predicted class over a grid, and the points."""
    plt = pyplot()
    kinds = list(next(iter(models.values())))
    fig, axes = plt.subplots(
        len(kinds), len(problems), figsize=(3 * len(problems), 3 * len(kinds)), layout="constrained"
    )
    for col, (name, (x, y)) in enumerate(problems.items()):
        lo, hi = x.min(axis=0) - 0.3, x.max(axis=0) + 0.3
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 150), np.linspace(lo[1], hi[1], 150))
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
        for row, kind in enumerate(kinds):
            ax = axes[row, col]
            zone = predict(models[name][kind], grid).reshape(gx.shape)
            ax.contourf(
                gx, gy, zone, levels=np.arange(-0.5, y.max() + 1), cmap="Pastel1", alpha=0.8
            )
            ax.scatter(x[:, 0], x[:, 1], c=y, cmap="Set1", s=6, vmin=0, vmax=8)
            ax.set_title(f"{name}: {kind}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    path = ctx.figure("decision_boundaries")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(ctx: Context) -> Report:
    report = Report("sanity", "Sanity checks: toy problems and overfitting one batch")

    data_rng = ctx.rng()
    problems = toy_problems(data_rng, ctx.pick(400, 1000))
    epochs = ctx.pick(60, 150)
    rows: list[list[str]] = []
    accuracy: dict[tuple[str, str], float] = {}
    models: dict[str, dict[str, nn.Module]] = {}
    for name, (x, y) in ctx.progress(problems.items(), "toy problems", total=len(problems)):
        x_tr, y_tr, x_te, y_te = train_val_split(x, y, 0.25, data_rng)
        models[name] = {}
        for kind, hidden in (("softmax regression", []), ("MLP 2-32-32", [32, 32])):
            model = train_classifier(x_tr, y_tr, hidden, epochs, ctx.rng())
            models[name][kind] = model
            accuracy[name, kind] = float(np.mean(predict(model, x_te) == y_te))
        rows.append(
            [name, str(len(x_te))]
            + [f"{accuracy[name, k]:.1%}" for k in ("softmax regression", "MLP 2-32-32")]
        )
    report.tables.append(
        Table(
            ["problem", "test points", "softmax regression", "MLP 2-32-32"],
            rows,
            f"test accuracy; Adam lr 0.01, batch 32, {epochs} epochs on 75% of the points",
        )
    )

    report.figures.append(decision_boundaries(ctx, problems, models))

    mnist = load_mnist()
    batch = ctx.rng().choice(len(mnist.y_train), 64, replace=False)
    xb = mnist.x_train[batch].reshape(64, -1).astype(np.float32) / np.float32(255)
    yb = mnist.y_train[batch]
    steps = 200
    checks = {}
    for name, (model, optimizer) in ctx.progress(
        suspects(ctx.rng()).items(), "overfit one batch", total=5
    ):
        checks[name] = overfit_one_batch(model, optimizer, xb, yb, steps)
    report.tables.append(
        Table(
            ["network", "first loss", "loss after 200 steps", "batch accuracy", "verdict"],
            [
                [
                    name,
                    f"{c.losses[0]:.3f}",
                    f"{c.final_loss:.2g}",
                    f"{c.accuracy:.0%}",
                    "overfits: OK" if c.passed else "BROKEN: cannot overfit",
                ]
                for name, c in checks.items()
            ],
            f"overfit one batch of 64 MNIST images, Adam lr 0.001, {steps} full-batch steps; "
            f"broken = loss still >= {OVERFIT_LOSS}",
        )
    )
    report.numbers.update(
        accuracy=accuracy,
        overfit_loss={n: c.final_loss for n, c in checks.items()},
        overfit_accuracy={n: c.accuracy for n, c in checks.items()},
        broken=[n for n, c in checks.items() if not c.passed],
    )

    mlp_acc = [accuracy[p, "MLP 2-32-32"] for p in problems]
    lin_acc = [accuracy[p, "softmax regression"] for p in problems]
    report.findings.append(
        f"The MLP gets {min(mlp_acc):.1%} to {max(mlp_acc):.1%} of the toy test points right; "
        f"a straight line (softmax regression) only {min(lin_acc):.1%} to {max(lin_acc):.1%}."
    )
    caught = [n for n in checks if n != "correct MLP" and not checks[n].passed]
    report.findings.append(
        f"The one-batch check passed the correct MLP (loss {checks['correct MLP'].final_loss:.1e}) "
        f"and flagged {len(caught)} of the {len(checks) - 1} broken networks: {', '.join(caught)}."
    )
    high_acc = [n for n in caught if checks[n].accuracy >= 0.95]
    if high_acc:
        report.findings.append(
            f"Flagged despite {min(checks[n].accuracy for n in high_acc):.0%} batch accuracy: "
            f"{', '.join(high_acc)}; the check reads the loss, not the accuracy."
        )

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.5), layout="constrained")
    for name, c in checks.items():
        ax.semilogy(c.losses, label=name)
    ax.axhline(OVERFIT_LOSS, color="k", lw=0.8, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel("loss on the batch")
    ax.set_title("Overfitting one batch of 64 images")
    ax.legend(fontsize=7)
    path = ctx.figure("overfit_one_batch")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)
    return report
