"""baselines: the "stupid baseline" first, then the network.

Before training a network, measure what requires no learning at all. Predicting
the most frequent class is the floor (about 11% on MNIST). A nearest-centroid
classifier (one mean image per digit) and k-nearest neighbours need no gradient
descent; softmax regression is a network without a hidden layer. The
784-128-10 MLP earns its place only by the margin it has over these.

k-nearest neighbours is the costly one: every test image against every
training image. Written naively the distance matrix alone is 10,000 x 60,000
float64 numbers (4.8 GB). Here the squared distances come from one matrix
product per chunk of queries, ``|a - b|^2 = |a|^2 - 2 a.b + |b|^2`` (the
``|a|^2`` term does not change the ranking and is left out), and each chunk
keeps only the indices of its ``k_max`` nearest, so memory stays bounded by the
chunk size; the study measures the peak with ``tracemalloc``. k is chosen on a
validation split carved out of the training set, never on the test set.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from handgrad import nn, optim
from handgrad.data import load_mnist, stratified_split
from handgrad.recipes import build_mlp
from handgrad.studies._base import Context, Report, Table, pyplot
from handgrad.train import fit, predict

KS = (1, 3, 5, 7, 9)


def majority_class(y_train: np.ndarray, n: int) -> np.ndarray:
    """Predict the most frequent training label ``n`` times."""
    return np.full(n, np.bincount(y_train).argmax())


def nearest_centroid(x_train: np.ndarray, y_train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Label of the closest class mean. ``x_train (N, D)``, ``x (M, D)`` floats -> ``(M,)``."""
    classes = np.unique(y_train)
    centroids = np.stack([x_train[y_train == c].mean(axis=0) for c in classes])  # (C, D)
    d = (centroids**2).sum(axis=1) - 2.0 * x @ centroids.T  # (M, C), without |x|^2
    return classes[d.argmin(axis=1)]


def nearest_neighbours(
    x_train: np.ndarray, x: np.ndarray, k_max: int, chunk: int = 128
) -> np.ndarray:
    """Indices of the ``k_max`` nearest training rows of each query, nearest first.

    ``x_train (N, D)``, ``x (M, D)`` floats -> ``(M, k_max)`` int64. Queries go
    ``chunk`` at a time, so the largest temporary is ``(chunk, N)``.
    """
    train_sq = np.einsum("nd,nd->n", x_train, x_train)  # (N,), without an (N, D) temporary
    out = np.empty((len(x), k_max), dtype=np.int64)
    for start in range(0, len(x), chunk):
        q = x[start : start + chunk]  # (B, D)
        d = q @ x_train.T  # (B, N)
        d *= -2.0
        d += train_sq  # |b|^2 - 2 a.b; |a|^2 does not change the order
        near = np.argpartition(d, k_max - 1, axis=1)[:, :k_max]  # (B, k_max), unordered
        order = np.take_along_axis(d, near, axis=1).argsort(axis=1, kind="stable")
        out[start : start + len(q)] = np.take_along_axis(near, order, axis=1)
    return out


def knn_vote(neighbour_labels: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """Majority label among the first ``k`` neighbours; ties go to the nearer ones.

    Each vote weighs ``1 + (k - rank) / (k (k + 1))``: the extra weights sum to
    1/2, so they only break ties. ``(M, k_max)`` labels -> ``(M,)``.
    """
    labels = neighbour_labels[:, :k]  # (M, k)
    weights = 1.0 + (k - np.arange(k)) / (k * (k + 1))  # (k,)
    votes = np.zeros((len(labels), n_classes))
    for rank in range(k):
        votes[np.arange(len(labels)), labels[:, rank]] += weights[rank]
    return votes.argmax(axis=1)


def choose_k(
    neighbour_labels: np.ndarray, y_val: np.ndarray, ks: Sequence[int] = KS
) -> dict[int, float]:
    """Validation accuracy of each ``k``, from the labels of each validation image's
    ``max(ks)`` nearest training images (one search serves every k)."""
    n_classes = int(max(neighbour_labels.max(), y_val.max())) + 1
    return {k: float(np.mean(knn_vote(neighbour_labels, k, n_classes) == y_val)) for k in ks}


def train_network(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    rng: np.random.Generator,
) -> nn.Module:
    """Plain SGD on cross-entropy, batches of 64 (the course's recipe)."""
    optimizer = optim.SGD(model.parameters(), lr=lr)
    fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        (x, y),
        epochs=epochs,
        batch_size=64,
        rng=rng,
        verbose=0,
    )
    return model


@dataclass(frozen=True)
class Measured:
    """A method's test accuracy, wall time (fit and predict) and peak traced memory."""

    accuracy: float
    seconds: float
    peak_mb: float


def measure(predict_test: Callable[[], np.ndarray], y_test: np.ndarray) -> Measured:
    """Run ``predict_test`` (which trains, then predicts), timing it and tracing memory."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        predictions = predict_test()
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return Measured(float(np.mean(predictions == y_test)), seconds, peak / 2**20)


def process_peak_mb() -> float | None:
    """The largest resident memory of this process so far, in MB (None on Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def run(ctx: Context) -> Report:
    report = Report("baselines", "Baselines before the network: MNIST test accuracy")
    data = load_mnist()
    n_train, n_test = ctx.pick(3000, 60000), ctx.pick(1000, 10000)
    epochs = 5
    pick = ctx.rng()
    train_idx = np.sort(pick.permutation(len(data.y_train))[:n_train])
    test_idx = np.sort(pick.permutation(len(data.y_test))[:n_test])
    # kNN and the centroids work on float32 pixels in [0, 1]; the networks get the
    # uint8 images and scale them batch by batch (fit's default transform).
    images, labels = data.x_train[train_idx], data.y_train[train_idx]
    test_images, y_test = data.x_test[test_idx], data.y_test[test_idx]
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
    x_test = test_images.reshape(len(test_images), -1).astype(np.float32) / np.float32(255)

    fit_idx, val_idx = stratified_split(labels, 0.1, ctx.rng())
    start = time.perf_counter()
    x_fit, parts = x[fit_idx], np.array_split(x[val_idx], 10)
    near = np.concatenate(
        [
            nearest_neighbours(x_fit, part, max(KS))
            for part in ctx.progress(parts, "k-nearest neighbours: choosing k", total=len(parts))
        ]
    )
    del x_fit
    val_acc = choose_k(labels[fit_idx][near], labels[val_idx])
    choose_seconds = time.perf_counter() - start
    best_k = max(val_acc, key=lambda k: (val_acc[k], -k))  # ties: the smaller k

    def knn() -> np.ndarray:
        near = nearest_neighbours(x, x_test, best_k)
        return knn_vote(labels[near], best_k, 10)

    def softmax_regression() -> np.ndarray:
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10, rng=net_rng))
        train_network(model, images, labels, epochs=epochs, lr=0.1, rng=net_rng)
        return predict(model, test_images)

    def mlp() -> np.ndarray:
        model = build_mlp(784, [128], 10, rng=net_rng)
        train_network(model, images, labels, epochs=epochs, lr=0.1, rng=net_rng)
        return predict(model, test_images)

    net_rng = ctx.rng()
    methods: dict[str, Callable[[], np.ndarray]] = {
        "majority class": lambda: majority_class(labels, len(y_test)),
        "nearest centroid": lambda: nearest_centroid(x, labels, x_test),
        f"k-nearest neighbours (k = {best_k})": knn,
        "softmax regression (784-10)": softmax_regression,
        "MLP 784-128-10 (ReLU)": mlp,
    }
    keys = ["majority", "centroid", "knn", "softmax", "mlp"]
    results = {}
    for key, (name, method) in ctx.progress(
        zip(keys, methods.items(), strict=True), "baselines", total=len(keys)
    ):
        results[key] = (name, measure(method, y_test))

    rows = [
        [name, f"{m.accuracy:.2%}", f"{m.seconds:.2f} s", f"{m.peak_mb:.0f} MB"]
        for name, m in results.values()
    ]
    caption = (
        f"{n_train:,} training and {n_test:,} test images; networks: SGD lr 0.1, batch 64, "
        f"{epochs} epochs; time = fit + predict; memory = peak traced by tracemalloc"
    )
    report.tables.append(Table(["method", "test accuracy", "time", "peak memory"], rows, caption))
    report.tables.append(
        Table(
            ["k", "validation accuracy"],
            [[str(k), f"{acc:.2%}"] for k, acc in val_acc.items()],
            f"k for k-nearest neighbours, chosen on a validation split of {len(val_idx):,} "
            f"training images (neighbours among the other {len(fit_idx):,}; "
            f"{choose_seconds:.1f} s for all five k)",
        )
    )
    acc = {key: m.accuracy for key, (_, m) in results.items()}
    report.numbers.update(
        accuracy=acc,
        seconds={key: m.seconds for key, (_, m) in results.items()},
        peak_mb={key: m.peak_mb for key, (_, m) in results.items()},
        val_accuracy=val_acc,
        k=best_k,
    )

    ranked = sorted(acc, key=acc.__getitem__)
    names = {key: results[key][0].split(" (")[0] for key in keys}
    report.findings.append(
        "From worst to best: " + " < ".join(f"{names[k]} ({acc[k]:.1%})" for k in ranked) + "."
    )
    report.findings.append(
        f"The MLP is {acc['mlp'] - acc['softmax']:+.1%} over softmax regression and "
        f"{acc['mlp'] - acc['knn']:+.1%} over k-nearest neighbours, which needed no training "
        f"but took {results['knn'][1].seconds:.1f} s to search {n_train:,} images for "
        f"{n_test:,} queries, with a peak of {results['knn'][1].peak_mb:.0f} MB."
    )
    report.findings.append(
        f"k = {best_k} had the best validation accuracy ({val_acc[best_k]:.2%}); "
        f"k = 1 had {val_acc[1]:.2%}."
    )
    resident = process_peak_mb()
    report.numbers["process_peak_mb"] = resident
    if resident is not None:
        report.findings.append(
            f"The whole process (MNIST, its float copies, every method) peaked at "
            f"{resident:.0f} MB resident."
        )

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3), layout="constrained")
    ax.barh([names[k] for k in keys], [acc[k] for k in keys], color="#4c72b0")
    for i, k in enumerate(keys):
        ax.text(acc[k] + 0.01, i, f"{acc[k]:.1%}", va="center")
    ax.set_xlim(0, 1.12)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy")
    ax.set_title("Baselines on MNIST")
    path = ctx.figure("baselines")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)
    return report
