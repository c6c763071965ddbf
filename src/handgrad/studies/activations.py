"""activations: eight activations in one deep network, each with its matching
initialiser and with a mismatched one.

Every run trains the same MNIST network, six hidden layers of 64 units, with SGD
and momentum: only the activation and the initial weights change. SGD (not Adam)
on purpose: Adam divides each gradient by its own size, which would hide the
vanishing gradients this study is about.

An initialiser *matches* an activation when it keeps the variance of the signal
the same from layer to layer: He (``2 / fan_in``) for the ReLU family (ReLU,
leaky ReLU, ELU, GELU, SiLU), Xavier for sigmoid and tanh (with tanh's gain 5/3),
LeCun (``1 / fan_in``) for SELU, whose self-normalisation is derived for it. The
mismatched one is the other common default: Xavier (Keras's) for the ReLU family,
which halves the variance at every layer, and He (PyTorch-style ReLU nets') for
sigmoid, tanh and SELU.

The per-layer statistics are measured on a fixed batch of training images at
initialisation and after every epoch: the standard deviation of each hidden
layer's output, and the root mean square of each hidden layer's weight gradient.
A deep sigmoid network shows vanishing gradients (the first layer's gradient is
orders of magnitude below the last one's: sigmoid's slope is at most 1/4) and
does not learn; the ReLU family keeps the weight gradients level across the depth.
GELU and SiLU are about ``x / 2`` near 0, so even He's gain lets their small
outputs shrink from layer to layer.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from handgrad import nn, optim
from handgrad.callbacks import Callback
from handgrad.data import load_mnist
from handgrad.studies._base import Context, Report, Table, pyplot
from handgrad.train import evaluate, fit

Initialiser = Callable[..., np.ndarray]

HE = functools.partial(nn.init.kaiming_normal, nonlinearity="relu")
XAVIER = nn.init.xavier_normal
XAVIER_TANH = functools.partial(nn.init.xavier_normal, gain=nn.init.calculate_gain("tanh"))
LECUN = nn.init.lecun_normal
LEAKY_HE = functools.partial(nn.init.kaiming_normal, a=0.01, nonlinearity="leaky_relu")

# name -> (the module's class, (matching initialiser), (mismatched initialiser))
Choice = tuple[Callable[[], nn.Module], tuple[str, Initialiser], tuple[str, Initialiser]]
ACTIVATIONS: dict[str, Choice] = {
    "sigmoid": (nn.Sigmoid, ("Xavier", XAVIER), ("He", HE)),
    "tanh": (nn.Tanh, ("Xavier, gain 5/3", XAVIER_TANH), ("He", HE)),
    "ReLU": (nn.ReLU, ("He", HE), ("Xavier", XAVIER)),
    "leaky ReLU": (nn.LeakyReLU, ("He, slope 0.01", LEAKY_HE), ("Xavier", XAVIER)),
    "ELU": (nn.ELU, ("He", HE), ("Xavier", XAVIER)),
    "SELU": (nn.SELU, ("LeCun", LECUN), ("He", HE)),
    "GELU": (nn.GELU, ("He", HE), ("Xavier", XAVIER)),
    "SiLU": (nn.SiLU, ("He", HE), ("Xavier", XAVIER)),
}


def deep_mlp(
    activation: Callable[[], nn.Module],
    weight_init: Initialiser,
    depth: int,
    width: int,
    rng: np.random.Generator,
) -> nn.Sequential:
    """``784 -> [Linear(width) -> activation] * depth -> Linear(10)``, every weight from
    ``weight_init``, biases zero."""
    layers: list[nn.Module] = []
    fan_in = 784
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width, rng=rng, weight_init=weight_init), activation()]
        fan_in = width
    layers.append(nn.Linear(fan_in, 10, rng=rng, weight_init=weight_init))
    return nn.Sequential(*layers)


def layer_stats(
    model: nn.Sequential, loss: nn.Loss, x: np.ndarray, y: np.ndarray
) -> tuple[list[float], list[float]]:
    """One forward and backward pass on ``(x, y)``, layer by layer.

    Returns the standard deviation of each hidden layer's output (the activation
    modules) and the root mean square of each hidden ``Linear``'s weight gradient.
    """
    modules = list(model)
    act_std = []
    out = x
    for module in modules:
        out = module.forward(out)
        if not isinstance(module, nn.Linear):
            act_std.append(float(out.std()))
    hidden = [m for m in modules if isinstance(m, nn.Linear)][:-1]
    if not math.isfinite(loss.forward(out, y)):
        return act_std, [math.nan] * len(hidden)
    model.zero_grad()
    dout = loss.backward()
    for module in reversed(modules):
        dout = module.backward(dout)
    grad_rms = [float(np.sqrt(np.mean(m.weight.grad.astype(np.float64) ** 2))) for m in hidden]
    model.zero_grad()
    return act_std, grad_rms


class StatsRecorder(Callback):
    """Records :func:`layer_stats` on a fixed batch before training and after each epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y
        self.act_std: list[list[float]] = []
        self.grad_rms: list[list[float]] = []

    def _record(self) -> None:
        model = self.trainer.model
        assert isinstance(model, nn.Sequential)
        with np.errstate(all="ignore"):
            a, g = layer_stats(model, self.trainer.loss, self.x, self.y)
        self.act_std.append(a)
        self.grad_rms.append(g)

    def on_train_begin(self) -> None:
        self._record()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self._record()


@dataclass
class Run:
    """One activation with one initialiser: the accuracies and the recorded statistics
    (``act_std[e][l]``: after epoch ``e``, 0 = at initialisation, hidden layer ``l``)."""

    activation: str
    init: str
    matched: bool
    test_accuracy: float
    train_accuracy: list[float]
    epochs_to_target: int | None
    act_std: list[list[float]]
    grad_rms: list[list[float]]
    stop_reason: str | None
    seconds: float


def train_run(
    activation: str,
    matched: bool,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    depth: int,
    width: int,
    epochs: int,
    lr: float,
    target: float,
    rng: np.random.Generator,
) -> Run:
    """Train the deep network with one activation and one initialiser; record its statistics."""
    x, y, x_test, y_test = data
    factory, good, bad = ACTIVATIONS[activation]
    init_name, weight_init = good if matched else bad
    model = deep_mlp(factory, weight_init, depth, width, rng)
    loss = nn.CrossEntropyLoss()
    recorder = StatsRecorder((x[:500] / 255.0).astype(np.float32), y[:500])
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # divergence is in stop_reason
        history = fit(model, loss, optimizer, (x, y), epochs=epochs, batch_size=64, rng=rng,
                      callbacks=[recorder], verbose=0)  # fmt: skip
    train_acc = history.history.get("accuracy", [])
    reached = [e + 1 for e, a in enumerate(train_acc) if a >= target]
    with np.errstate(all="ignore"):
        test_acc = evaluate(model, loss, x_test, y_test)["accuracy"]
    return Run(
        activation, init_name, matched, test_acc, train_acc, reached[0] if reached else None,
        recorder.act_std, recorder.grad_rms, history.stop_reason, sum(history["seconds"]),
    )  # fmt: skip


def activation_curves(x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each activation and its derivative on ``x`` (the derivative from its own backward)."""
    curves = {}
    for name, (factory, _, _) in ACTIVATIONS.items():
        module = factory()
        y = module.forward(x)
        curves[name] = (y, module.backward(np.ones_like(x)))
    return curves


def _g(value: float) -> str:
    return f"{value:.2g}" if math.isfinite(value) else "nan"


def run(ctx: Context) -> Report:
    report = Report("activations", "Activations and their initialisers in a deep network")
    depth, width, target = 6, 64, 0.97
    n_train = ctx.pick(2000, 30000)
    epochs = ctx.pick(3, 8)
    lr = 0.02
    mnist = load_mnist()
    order = ctx.rng().permutation(len(mnist.y_train))[:n_train]
    n_test = ctx.pick(2000, 10000)
    data = (
        mnist.x_train[order].reshape(n_train, -1),
        mnist.y_train[order],
        mnist.x_test[:n_test].reshape(n_test, -1),
        mnist.y_test[:n_test],
    )
    runs = []
    jobs = [(name, matched) for name in ACTIVATIONS for matched in (True, False)]
    for name, matched in ctx.progress(jobs, "activations", total=len(jobs)):
        runs.append(train_run(name, matched, data, depth=depth, width=width, epochs=epochs, lr=lr,
                              target=target, rng=ctx.rng()))  # fmt: skip

    rows = []
    for r in runs:
        reached = str(r.epochs_to_target) if r.epochs_to_target else "not reached"
        if r.stop_reason and r.stop_reason.startswith("non-finite"):
            reached = "diverged"
        a0, g0 = r.act_std[0], r.grad_rms[0]
        first = f"{100 * r.train_accuracy[0]:.1f}%" if r.train_accuracy else "-"
        rows.append([
            r.activation, r.init + ("" if r.matched else " (mismatched)"), first,
            f"{100 * r.test_accuracy:.1f}%", reached,
            _g(a0[0]), _g(a0[-1]), _g(g0[0]), _g(g0[-1]), _g(g0[0] / g0[-1]),
        ])  # fmt: skip
    report.tables.append(Table(
        ["activation", "initialiser", "train acc epoch 1", "test acc",
         f"epochs to {target:.0%} train acc",
         "act std L1", f"act std L{depth}", "grad L1", f"grad L{depth}", f"grad L1/L{depth}"],
        rows,
        f"{depth} hidden layers of {width}, SGD lr {lr} momentum 0.9, batch 64, {epochs} epochs "
        f"on {n_train} MNIST training images, tested on {n_test}; statistics at initialisation "
        "on 500 training images (act std: output of hidden layer l; grad: RMS of its weight "
        "gradient)",
    ))  # fmt: skip
    for when, e in (("at initialisation", 0), (f"after epoch {epochs}", -1)):
        stat_rows = []
        for r in runs:
            stat_rows.append(
                [r.activation, r.init, *map(_g, r.act_std[e]), *map(_g, r.grad_rms[e])]
            )
        report.tables.append(Table(
            ["activation", "initialiser", *[f"act L{i + 1}" for i in range(depth)],
             *[f"grad L{i + 1}" for i in range(depth)]],
            stat_rows,
            f"Per-layer statistics {when}: std of each hidden layer's output, RMS of its "
            "weight gradient",
        ))  # fmt: skip

    report.numbers.update(runs={(r.activation, r.matched): r for r in runs}, target=target,
                          depth=depth, epochs=epochs)  # fmt: skip
    _findings(report, runs, target)
    _figures(ctx, report, runs, depth)
    return report


def _findings(report: Report, runs: list[Run], target: float) -> None:
    matched = [r for r in runs if r.matched]
    best = max(matched, key=lambda r: r.test_accuracy)
    worst = min(runs, key=lambda r: r.test_accuracy)
    report.findings.append(
        f"Best with its matching initialiser: {best.activation} ({best.init}), "
        f"{100 * best.test_accuracy:.1f}% test accuracy; worst of all runs: {worst.activation} "
        f"with {worst.init}, {100 * worst.test_accuracy:.1f}%."
    )
    ratios = {r.activation: r.grad_rms[0][0] / r.grad_rms[0][-1] for r in matched}
    smallest = min(ratios, key=lambda k: ratios[k])
    report.findings.append(
        f"At initialisation the first hidden layer's weight gradient is {ratios[smallest]:.2g} "
        f"times the last one's with {smallest}: the gradient vanishes on its way down "
        f"(a sigmoid's slope is at most 1/4 per layer); the ReLU family keeps this ratio "
        f"between {min(ratios[k] for k in ('ReLU', 'leaky ReLU', 'GELU', 'SiLU', 'ELU')):.2g} "
        f"and {max(ratios[k] for k in ('ReLU', 'leaky ReLU', 'GELU', 'SiLU', 'ELU')):.2g}."
    )
    relu_he, relu_xavier = (next(r for r in runs if r.activation == "ReLU" and r.matched is m)
                            for m in (True, False))  # fmt: skip
    report.findings.append(
        "ReLU with Xavier loses half of the variance at every layer: the output std of the "
        f"last hidden layer is {relu_xavier.act_std[0][-1]:.2g} against "
        f"{relu_he.act_std[0][-1]:.2g} with He; the test accuracies are "
        f"{100 * relu_xavier.test_accuracy:.1f}% and "
        f"{100 * relu_he.test_accuracy:.1f}%."
    )
    smooth = [r for r in matched if r.activation in ("GELU", "SiLU")]
    report.findings.append(
        "GELU and SiLU are about x/2 near 0: with He their output std goes from "
        + " and ".join(f"{r.act_std[0][0]:.2g} to {r.act_std[0][-1]:.2g} ({r.activation})"
                       for r in smooth)
        + f" over {len(relu_he.act_std[0])} layers at initialisation, where ReLU's goes from "
        f"{relu_he.act_std[0][0]:.2g} to {relu_he.act_std[0][-1]:.2g}."
    )  # fmt: skip
    pairs = [(g, b) for g in runs for b in runs
             if g.matched and not b.matched and g.activation == b.activation]  # fmt: skip
    gaps = {g.activation: 100 * (g.test_accuracy - b.test_accuracy) for g, b in pairs}
    biggest = max(gaps, key=lambda k: abs(gaps[k]))
    after = (
        f"(after training, ReLU's last hidden layer has std "
        f"{relu_xavier.act_std[-1][-1]:.2g} with Xavier and {relu_he.act_std[-1][-1]:.2g} "
        "with He)"
    )
    # Only a small gap says that training made up for the mismatch; a short run may not.
    why = (
        f"six layers are few enough for training to rescale the weights {after}; the "
        "per-layer factor compounds with depth"
        if abs(gaps[biggest]) <= 3
        else f"training this short has not made up for the mismatch {after}"
    )
    report.findings.append(
        f"Matching the initialiser changes the final test accuracy by at most "
        f"{abs(gaps[biggest]):.1f} points ({biggest}: {gaps[biggest]:+.1f}): {why}."
    )
    early = {g.activation: 100 * (g.train_accuracy[0] - b.train_accuracy[0])
             for g, b in pairs if g.train_accuracy and b.train_accuracy}  # fmt: skip
    if early:
        most = max(early, key=lambda k: early[k])
        report.findings.append(
            f"The mismatch shows early: after epoch 1 the training accuracy with the matching "
            f"initialiser is higher for {sum(v > 0 for v in early.values())} of the "
            f"{len(early)} activations, by up to {early[most]:.1f} points ({most})."
        )
    never = [f"{r.activation} ({r.init})" for r in runs if r.epochs_to_target is None]
    if never:
        report.findings.append(
            f"Training accuracy never reached {target:.0%} for: {', '.join(never)}."
        )


def _figures(ctx: Context, report: Report, runs: list[Run], depth: int) -> None:
    plt = pyplot()
    x = np.linspace(-4, 4, 401)
    curves = activation_curves(x)
    fig, axes = plt.subplots(2, 4, figsize=(12, 5.5), sharex=True)
    for ax, (name, (y, dy)) in zip(axes.flat, curves.items(), strict=True):
        ax.plot(x, y, label="f(x)")
        ax.plot(x, dy, "--", label="f'(x)")
        ax.axhline(0, color="0.8", lw=0.8)
        ax.set_title(name)
    axes[0, 0].legend()
    fig.subplots_adjust(left=0.05, right=0.98, top=0.94, bottom=0.06, hspace=0.25)
    path = ctx.figure("activations")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)

    # one column per activation; solid: matching initialiser, dashed: mismatched;
    # circles at initialisation, squares after training
    fig, axes = plt.subplots(2, len(ACTIVATIONS), figsize=(16, 5.5), sharey="row")
    layers = np.arange(1, depth + 1)
    for col, name in enumerate(ACTIVATIONS):
        for r in (r for r in runs if r.activation == name):
            style = "-" if r.matched else "--"
            for e, marker, color in ((0, "o", "C0"), (-1, "s", "C1")):
                axes[0, col].semilogy(layers, r.act_std[e], style, marker=marker, color=color)
                axes[1, col].semilogy(layers, r.grad_rms[e], style, marker=marker, color=color)
        good, bad = ACTIVATIONS[name][1][0], ACTIVATIONS[name][2][0]
        axes[0, col].set_title(f"{name}\n— {good}, -- {bad}", fontsize=9)
        axes[1, col].set_xlabel("hidden layer")
    axes[0, 0].set_ylabel("std of the layer's output")
    axes[1, 0].set_ylabel("RMS of its weight gradient")
    fig.legend(
        handles=[plt.Line2D([], [], color="C0", marker="o", label="at initialisation"),
                 plt.Line2D([], [], color="C1", marker="s", label="after training")],
        loc="upper center", ncol=2, fontsize=8,
    )  # fmt: skip
    fig.subplots_adjust(left=0.05, right=0.99, top=0.85, bottom=0.09, wspace=0.1)
    path = ctx.figure("layer_stats")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)
