"""Time training epochs of the reference MLP: handgrad vs PyTorch (CPU) vs scikit-learn.

The same network (784 -> 128 ReLU -> 10), the same data (MNIST training images,
float32 in [0, 1], prepared once for everyone), the same optimizer (Adam, lr 1e-3),
the same batch size, one epoch per call. The contenders alternate within every
round (forward order in even rounds, reverse in odd ones), so slow and fast
moments of a noisy machine fall on all of them. The script reports each
contender's median epoch time, its ratio to handgrad's, and the test accuracy
after all rounds.

A fourth row, "GEMM floor", times only the five matrix products one training step
of this network cannot avoid (two forward, two weight gradients, one input gradient
of the second layer), for every batch of an epoch, on the same BLAS: how close
each contender comes to what the machine's BLAS allows.

    python benchmarks/bench_mlp.py --rounds 7 --threads 2 --markdown

BLAS threads are pinned to ``--threads`` before NumPy or PyTorch is imported.
Needs ``torch`` (``pip install torch==2.13.0``) and ``scikit-learn``; a missing
one is skipped and said so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

from _bench import (
    TIMING_HEAD,
    add_common_arguments,
    alternate,
    hardware,
    make_contenders,
    pin_threads,
    print_table,
    timing_row,
    versions,
)


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(p, rounds=7, threads_help="BLAS / intra-op threads")
    return p.parse_args(argv)


ARGS = _parse()
pin_threads(ARGS.threads)

import numpy as np  # noqa: E402  (after pinning the BLAS threads)

from handgrad import nn, optim  # noqa: E402
from handgrad.data import load_mnist  # noqa: E402
from handgrad.train import fit, predict  # noqa: E402

Epoch = Callable[[int], None]
Predict = Callable[[np.ndarray], np.ndarray]
HIDDEN, CLASSES, LR = 128, 10, 1e-3


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = load_mnist()
    n = min(ARGS.train_size, len(d.x_train))
    x = d.x_train[:n].reshape(n, -1).astype(np.float32) / np.float32(255)
    xt = d.x_test.reshape(len(d.x_test), -1).astype(np.float32) / np.float32(255)
    return x, d.y_train[:n], xt, d.y_test


def handgrad_contender(x: np.ndarray, y: np.ndarray) -> tuple[Epoch, Predict | None]:
    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Linear(x.shape[1], HIDDEN, rng=rng), nn.ReLU(), nn.Linear(HIDDEN, CLASSES, rng=rng)
    )
    loss = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=LR)

    def epoch(seed: int) -> None:
        fit(model, loss, opt, (x, y), epochs=1, batch_size=ARGS.batch_size, rng=seed)

    return epoch, lambda xt: predict(model, xt)


def torch_contender(x: np.ndarray, y: np.ndarray) -> tuple[Epoch, Predict | None]:
    import torch

    torch.set_num_threads(ARGS.threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES)
    )
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)

    def epoch(seed: int) -> None:
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
        model.train()
        for s in range(0, len(x), ARGS.batch_size):
            idx = order[s : s + ARGS.batch_size]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_all[idx]), y_all[idx]).backward()
            opt.step()

    def pred(xt: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(xt)).argmax(1).numpy()

    return epoch, pred


def sklearn_contender(x: np.ndarray, y: np.ndarray) -> tuple[Epoch, Predict | None]:
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,),
        solver="adam",
        learning_rate_init=LR,
        batch_size=ARGS.batch_size,
        alpha=0.0,
        random_state=0,
    )
    classes = np.arange(CLASSES)

    def epoch(seed: int) -> None:
        # partial_fit makes one pass over what it is given, in mini-batches
        order = np.random.default_rng(seed).permutation(len(x))
        clf.partial_fit(x[order], y[order], classes=classes)

    return epoch, clf.predict


def gemm_floor(x: np.ndarray, y: np.ndarray) -> tuple[Epoch, Predict | None]:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((HIDDEN, x.shape[1]), dtype=np.float32)
    w2 = rng.standard_normal((CLASSES, HIDDEN), dtype=np.float32)
    dz = rng.standard_normal((ARGS.batch_size, CLASSES), dtype=np.float32)
    dh = rng.standard_normal((ARGS.batch_size, HIDDEN), dtype=np.float32)

    def epoch(seed: int) -> None:
        order = np.random.default_rng(seed).permutation(len(x))
        for s in range(0, len(x), ARGS.batch_size):
            xb = x[order[s : s + ARGS.batch_size]]  # the gather every contender pays too
            h = xb @ w1.T  # (B, 128)
            _ = h @ w2.T  # (B, 10)
            m = len(xb)
            _ = dz[:m].T @ h  # dW2 (10, 128)
            _ = dz[:m] @ w2  # dh (B, 128)
            _ = dh[:m].T @ xb  # dW1 (128, 784)

    return epoch, None


CONTENDERS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[Epoch, Predict | None]]] = {
    "handgrad": handgrad_contender,
    "PyTorch": torch_contender,
    "scikit-learn": sklearn_contender,
    "GEMM floor": gemm_floor,
}


def main() -> int:
    x, y, xt, yt = _data()
    contenders: dict[str, tuple[Epoch, Predict | None]] = make_contenders(CONTENDERS, x, y)
    times = alternate({name: run for name, (run, _) in contenders.items()}, ARGS.rounds)
    base = statistics.median(times["handgrad"])
    rows = []
    for name, ts in times.items():
        predict_fn = contenders[name][1]
        acc = f"{np.mean(predict_fn(xt) == yt):.2%}" if predict_fn is not None else "-"
        rows.append([*timing_row(name, ts, base), acc])
    print(
        f"MLP {x.shape[1]}-{HIDDEN}-{CLASSES}, Adam {LR:g}, batch {ARGS.batch_size}, "
        f"{len(x):,} images, {ARGS.rounds} epochs each, {ARGS.threads} BLAS threads, "
        f"contenders alternating; {versions()}"
    )
    print(f"Hardware: {hardware()}")
    print_table(TIMING_HEAD, rows, ARGS.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
