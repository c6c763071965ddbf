"""worst: how would you make this network perform worst? One bad choice at a time.

The course asks the question backwards to teach what each good habit is for.
The reference is the course's 784-128-10 ReLU MLP, plain SGD at learning rate
0.1, batches of 64, on MNIST presented sorted by label (as some datasets are
stored). Each row changes exactly one thing, and the table shows the symptom
it leaves, measured, not assumed:

- unnormalised 0-255 pixels: the first layer's outputs, the logits and the
  gradients are 255 times larger, so each step of lr 0.1 is far too large;
- no shuffling on label-sorted data: every batch holds one digit, so the
  network chases the current class and ends each epoch predicting the last one;
- a naive softmax, ``exp(z) / sum(exp(z))`` without subtracting ``max(z)``:
  ``exp`` overflows float32 above 88.7; it is harmless while logits stay small,
  so the study reports the largest logit it met, and adds it to the unnormalised
  inputs to show the overflow;
- a learning rate of 10: the steps overshoot, the loss spikes, and the
  pre-activations are pushed so far that most ReLUs never fire again (a stable
  cross-entropy keeps the loss finite, so the symptom is dead units, not NaN);
- gradients summed over the batch instead of averaged: the same as a learning
  rate 64 times larger, with the same symptom.

Training is a plain loop over ``handgrad.nn`` and ``handgrad.optim`` so that
shuffling and the loss can be switched; a non-finite loss or weight stops the
run and is reported, never raised.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import numpy as np

from handgrad import nn, optim
from handgrad.data import load_mnist
from handgrad.recipes import build_mlp
from handgrad.studies._base import Context, Report, Table, pyplot
from handgrad.train import predict_scores

FLOAT32_EXP_LIMIT = math.log(np.finfo(np.float32).max)  # exp(z) = inf beyond 88.72


class NaiveSoftmaxCrossEntropy(nn.Loss):
    """Cross-entropy through ``p = exp(z) / sum(exp(z))`` then ``-log p_y``: the
    textbook formula, without the ``max`` subtraction that keeps ``exp`` finite."""

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:
        e = np.exp(input)  # (N, C): inf for scores above ~88.7 in float32
        p = e / e.sum(axis=1, keepdims=True)  # inf / inf = nan
        losses = -np.log(p[np.arange(len(target)), target])  # (N,)
        self._cache = (p, target)
        return float(losses.mean() if self.reduction == "mean" else losses.sum())

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        p, target = self._cached()
        dscores = p.copy()  # (N, C)
        dscores[np.arange(len(target)), target] -= 1
        return dscores * (dloss / len(target) if self.reduction == "mean" else dloss)


@dataclass(frozen=True)
class Recipe:
    """The choices the study flips, one at a time."""

    scale: bool = True  # pixels / 255
    shuffle: bool = True
    naive_softmax: bool = False
    lr: float = 0.1
    average: bool = True  # loss (and gradient) averaged over the batch, not summed


@dataclass(frozen=True)
class Outcome:
    """What a run did: per-step losses, where it stopped (if it did), test numbers."""

    losses: list[float]
    stopped: str | None
    test_accuracy: float
    max_logit: float
    dead_units: float  # share of hidden units that output 0 for every test image
    top_class_share: float  # share of test images given the most predicted class
    top_class: int


def train_and_test(
    recipe: Recipe,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    epochs: int,
    rng: np.random.Generator,
) -> Outcome:
    """Train the 784-128-10 MLP on uint8 images with ``recipe``; measure it on ``test``."""
    model = build_mlp(784, [128], 10, rng=rng)
    reduction = "mean" if recipe.average else "sum"
    naive = NaiveSoftmaxCrossEntropy(reduction)
    loss = naive if recipe.naive_softmax else nn.CrossEntropyLoss(reduction=reduction)
    optimizer = optim.SGD(model.parameters(), lr=recipe.lr)
    scale = np.float32(1 / 255 if recipe.scale else 1)

    def prep(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float32) * scale

    x, y = train
    losses: list[float] = []
    stopped, max_logit = None, 0.0
    for epoch in range(epochs):
        order = rng.permutation(len(y)) if recipe.shuffle else np.arange(len(y))
        for step, start in enumerate(range(0, len(y), 64)):
            idx = order[start : start + 64]
            with np.errstate(all="ignore"):  # overflow is the point; checked just below
                scores = model(prep(x[idx]))
                value = loss(scores, y[idx])
                max_logit = max(max_logit, float(np.abs(scores).max()))
                finite = math.isfinite(value)
                if finite:
                    optimizer.zero_grad()
                    model.backward(loss.backward())
                    optimizer.step()
                    finite = all(bool(np.isfinite(p.data).all()) for p in model.parameters())
            if not finite:
                what = "loss" if not math.isfinite(value) else "weights"
                stopped = f"non-finite {what} at epoch {epoch + 1}, step {step + 1}"
                break
            losses.append(value / (1 if recipe.average else len(idx)))
        if stopped:
            break

    x_test, y_test = test
    with np.errstate(all="ignore"):
        hidden = predict_scores(nn.Sequential(*list(model)[:3]), x_test, transform=prep)  # (N, 128)
        predicted = predict_scores(model, x_test, transform=prep).argmax(axis=1)
    counts = np.bincount(predicted, minlength=10)
    return Outcome(
        losses=losses,
        stopped=stopped,
        test_accuracy=float(np.mean(predicted == y_test)),
        max_logit=max_logit,
        dead_units=float(np.mean(~(hidden > 0).any(axis=0))),
        top_class_share=float(counts.max() / len(predicted)),
        top_class=int(counts.argmax()),
    )


def symptom(out: Outcome, reference: Outcome) -> str:
    """The most telling sign in ``out``'s numbers, in words."""
    if out.stopped:
        return out.stopped
    if out.dead_units > 0.5:
        return f"{out.dead_units:.0%} of hidden units dead"
    if out.top_class_share > 0.3:
        return f"predicts {out.top_class} for {out.top_class_share:.0%} of test images"
    if out.max_logit > FLOAT32_EXP_LIMIT:
        return f"logits up to {out.max_logit:.3g}: exp overflows float32"
    if out.test_accuracy < reference.test_accuracy - 0.02:
        return f"{reference.test_accuracy - out.test_accuracy:.1%} less accurate"
    return f"none: logits stay below {FLOAT32_EXP_LIMIT:.1f} (max {out.max_logit:.1f})"


def run(ctx: Context) -> Report:
    report = Report("worst", "How to make it perform worst: one bad choice at a time")
    data = load_mnist()
    n_train, n_test = ctx.pick(5000, 60000), ctx.pick(2000, 10000)
    epochs = ctx.pick(2, 3)
    pick = ctx.rng()
    tr = pick.permutation(len(data.y_train))[:n_train]
    tr = tr[np.argsort(data.y_train[tr], kind="stable")]  # the data arrive sorted by label
    te = np.sort(pick.permutation(len(data.y_test))[:n_test])
    train, test = (data.x_train[tr], data.y_train[tr]), (data.x_test[te], data.y_test[te])

    good = Recipe()
    recipes = {
        "reference (all good)": good,
        "unnormalised 0-255 inputs": replace(good, scale=False),
        "no shuffling (label-sorted data)": replace(good, shuffle=False),
        "naive softmax": replace(good, naive_softmax=True),
        "learning rate 10": replace(good, lr=10.0),
        "gradients summed, not averaged": replace(good, average=False),
        "naive softmax + 0-255 inputs": replace(good, naive_softmax=True, scale=False),
    }
    # Every run starts from the same weights and shuffles in the same order: the
    # one change is the only difference.
    start = ctx.rng()
    outcomes: dict[str, Outcome] = {}
    for name, recipe in ctx.progress(recipes.items(), "worst", total=len(recipes)):
        outcomes[name] = train_and_test(recipe, train, test, epochs, copy.deepcopy(start))

    reference = outcomes["reference (all good)"]
    rows = []
    for name, out in outcomes.items():
        last = np.mean(out.losses[-20:]) if out.losses else math.nan
        rows.append(
            [
                name,
                f"{out.test_accuracy:.1%}",
                "-" if math.isnan(last) else f"{last:.3g}",
                f"{out.max_logit:.3g}",
                f"{out.dead_units:.0%}",
                "-" if name == "reference (all good)" else symptom(out, reference),
            ]
        )
    report.tables.append(
        Table(
            ["choice", "test accuracy", "last loss", "max |logit|", "dead units", "symptom"],
            rows,
            f"784-128-10 ReLU MLP, SGD lr 0.1, batch 64, {epochs} epochs on {n_train:,} "
            f"label-sorted training images, {n_test:,} test images; one change per row "
            "(the last row combines two); last loss = mean of the last 20 steps, per image",
        )
    )
    report.numbers.update(
        test_accuracy={n: o.test_accuracy for n, o in outcomes.items()},
        stopped={n: o.stopped for n, o in outcomes.items()},
        max_logit={n: o.max_logit for n, o in outcomes.items()},
        dead_units={n: o.dead_units for n, o in outcomes.items()},
        top_class_share={n: o.top_class_share for n, o in outcomes.items()},
        symptom={n: symptom(o, reference) for n, o in outcomes.items()},
    )
    worse = sorted(
        (n for n in outcomes if n != "reference (all good)"),
        key=lambda n: outcomes[n].test_accuracy,
    )
    report.findings.append(
        f"The reference reaches {reference.test_accuracy:.1%}; from the worst: "
        + "; ".join(f"{n} {outcomes[n].test_accuracy:.1%}" for n in worse)
        + "."
    )
    naive = outcomes["naive softmax"]
    report.findings.append(
        f"The naive softmax alone gives {naive.test_accuracy:.1%} against "
        f"{reference.test_accuracy:.1%}: its largest logit was {naive.max_logit:.1f}, "
        + ("below" if naive.max_logit <= FLOAT32_EXP_LIMIT else "above")
        + f" the {FLOAT32_EXP_LIMIT:.1f} where exp overflows float32; with 0-255 inputs: "
        + symptom(outcomes["naive softmax + 0-255 inputs"], reference)
        + "."
    )

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    window = 10
    for name, out in outcomes.items():
        if len(out.losses) >= window:  # a running mean over 10 steps
            smooth = np.convolve(out.losses, np.ones(window) / window, mode="valid")
            style = ":" if name == "naive softmax" else "-"  # it lies on the reference
            label = f"{name} ({out.test_accuracy:.0%})"
            ax.semilogy(np.arange(window, len(out.losses) + 1), smooth, style, lw=1, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss per image (mean of 10 steps)")
    ax.set_title("One bad choice at a time")
    ax.legend(fontsize=7)
    path = ctx.figure("worst")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)
    return report
