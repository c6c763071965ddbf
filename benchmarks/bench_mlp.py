"""Time the reference MLP: handgrad vs PyTorch (CPU) vs scikit-learn vs the GEMM floor.

The same network (784 -> 128 ReLU -> 10), the same data (MNIST as ``--dtype`` in
[0, 1], prepared once in each worker), the same optimizer (``--optimizer``: Adam,
lr 1e-3, batch 128; or plain SGD, lr 0.1, batch 64), each epoch shuffled the same
way for everyone (epoch r: ``default_rng(r).permutation``). Each contender runs in
a process of its own, and in every measurement the contenders alternate (forward
order in even rounds, reverse in odd ones), so slow and fast moments of a noisy
machine fall on all of them:

1. **Training epochs** (``--rounds``): median, fastest and slowest epoch, ratio to
   handgrad, test accuracy after the rounds; the achieved GFLOP/s (the five matrix
   products of every step, ``2*M*K*N`` each, over the median epoch) and the epoch's
   time as a multiple of the GEMM floor's; the worker's peak resident memory.
2. **Inference** (``--infer-reps``): one call predicting all 10,000 test images
   (argmax of the scores), repeated; median images per second.
3. **Convergence** (``--convergence N``): a fresh model trained up to N epochs, its
   test accuracy measured after each (not timed): the training seconds until it
   first reaches ``--target`` (97%), and its accuracy after N epochs.

"GEMM floor" runs only the matrix products: in training the five of each step
(two forward, two weight gradients, the hidden layer's input gradient) plus the
batch gather, in inference the two forward ones, on the same BLAS in the same
dtype. Its GFLOP/s is this machine's matrix-product rate at these shapes.

    python benchmarks/bench_mlp.py --rounds 7 --threads 1 --markdown
    python benchmarks/bench_mlp.py --optimizer sgd --dtype float64 --convergence 10

BLAS threads are pinned to ``--threads`` before NumPy or PyTorch is imported.
Needs ``torch`` (``pip install torch==2.13.0``) and ``scikit-learn``; a missing
one is skipped and said so.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from _bench import (
    PROTOCOL,
    TIMING_HEAD,
    Worker,
    add_common_arguments,
    alternate,
    baseline,
    hardware,
    installed_versions,
    pin_threads,
    print_table,
    serve,
    start_workers,
    timing_row,
)

OPTIMIZERS = {"adam": ("Adam", 1e-3, 128), "sgd": ("SGD", 0.1, 64)}  # name, lr, batch


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(
        p, rounds=7, threads_help="BLAS / intra-op threads", batch_help="128 Adam, 64 SGD"
    )
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="adam", help="(default: adam)")
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-3 Adam, 0.1 SGD)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument(
        "--convergence",
        type=int,
        default=0,
        metavar="N",
        help="also train fresh models for N epochs: time to --target (default: 0, skip)",
    )
    p.add_argument("--target", type=float, default=0.97, help="test accuracy (default: 0.97)")
    p.add_argument(
        "--infer-reps", type=int, default=15, help="inference calls each (default: 15; 0 skips)"
    )
    p.add_argument(
        "--baseline",
        metavar="DIR",
        help="also time handgrad from another checkout (its root or src), as 'handgrad before'",
    )
    args = p.parse_args(argv)
    _, lr, batch = OPTIMIZERS[args.optimizer]
    args.lr = lr if args.lr is None else args.lr
    args.batch_size = batch if args.batch_size is None else args.batch_size
    return args


ARGS = _parse()
pin_threads(ARGS.threads)

import numpy as np  # noqa: E402  (after pinning the BLAS threads)

from handgrad import nn, optim  # noqa: E402
from handgrad.data import load_mnist  # noqa: E402
from handgrad.train import fit, predict  # noqa: E402

Predict = Callable[[np.ndarray], np.ndarray]
IN, HIDDEN, CLASSES = 784, 128, 10
DTYPE = np.dtype(ARGS.dtype)
FLOOR = "GEMM floor"
#: FLOPs per sample: a training step's five products (2*M*K*N each, M the batch),
#: and inference's two forward ones
TRAIN_FLOPS = 2 * (2 * IN * HIDDEN + 3 * HIDDEN * CLASSES)
INFER_FLOPS = 2 * (IN * HIDDEN + HIDDEN * CLASSES)
DEFAULT_PREDICT_BATCH = inspect.signature(predict).parameters["batch_size"].default


@dataclass
class Contender:
    """One contender inside its worker: ``train(seed)`` runs one epoch shuffled by
    ``seed``; ``labels`` predicts classes (None for the floor, which has no model);
    ``infer`` holds the calls whose throughput is measured, by a key without spaces."""

    train: Callable[[int], None]
    labels: Predict | None
    infer: dict[str, Callable[[np.ndarray], object]]


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = load_mnist()
    n = min(ARGS.train_size, len(d.x_train))
    x = d.x_train[:n].reshape(n, -1).astype(DTYPE)
    xt = d.x_test.reshape(len(d.x_test), -1).astype(DTYPE)
    x /= 255  # in place: no second copy in the peak memory
    xt /= 255
    return x, d.y_train[:n], xt, d.y_test


def handgrad_contender(x: np.ndarray, y: np.ndarray) -> Contender:
    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Linear(IN, HIDDEN, rng=rng, dtype=DTYPE),
        nn.ReLU(),
        nn.Linear(HIDDEN, CLASSES, rng=rng, dtype=DTYPE),
    )
    loss = nn.CrossEntropyLoss()
    params = model.parameters()
    opt = optim.Adam(params, lr=ARGS.lr) if ARGS.optimizer == "adam" else optim.SGD(params, ARGS.lr)

    def epoch(seed: int) -> None:
        fit(model, loss, opt, (x, y), epochs=1, batch_size=ARGS.batch_size, rng=seed, verbose=0)

    def one_call(xt: np.ndarray) -> np.ndarray:
        return predict(model, xt, batch_size=len(xt))

    return Contender(epoch, one_call, {"all": one_call, "default": lambda xt: predict(model, xt)})


def torch_contender(x: np.ndarray, y: np.ndarray) -> Contender:
    import torch

    torch.set_num_threads(ARGS.threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES)
    ).to(getattr(torch, ARGS.dtype))
    kind = torch.optim.Adam if ARGS.optimizer == "adam" else torch.optim.SGD
    opt = kind(model.parameters(), lr=ARGS.lr)
    x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)

    def epoch(seed: int) -> None:
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
        model.train()
        for s in range(0, len(x), ARGS.batch_size):
            idx = order[s : s + ARGS.batch_size]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_all[idx]), y_all[idx]).backward()
            opt.step()

    def labels(xt: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(xt)).argmax(1).numpy()

    return Contender(epoch, labels, {"all": labels})


def sklearn_contender(x: np.ndarray, y: np.ndarray) -> Contender:
    from sklearn.neural_network import MLPClassifier

    solver = {"solver": "sgd", "momentum": 0.0, "nesterovs_momentum": False}
    clf = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,),
        **(solver if ARGS.optimizer == "sgd" else {"solver": "adam"}),
        learning_rate_init=ARGS.lr,
        batch_size=ARGS.batch_size,
        alpha=0.0,
        shuffle=False,  # we shuffle, as for everyone
        random_state=0,
    )
    classes = np.arange(CLASSES)

    def epoch(seed: int) -> None:
        # partial_fit makes one pass over what it is given, in mini-batches
        order = np.random.default_rng(seed).permutation(len(x))
        clf.partial_fit(x[order], y[order], classes=classes)

    return Contender(epoch, clf.predict, {"all": clf.predict})


def gemm_floor(x: np.ndarray, y: np.ndarray) -> Contender:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((HIDDEN, IN)).astype(DTYPE)
    w2 = rng.standard_normal((CLASSES, HIDDEN)).astype(DTYPE)
    dz = rng.standard_normal((ARGS.batch_size, CLASSES)).astype(DTYPE)
    dh = rng.standard_normal((ARGS.batch_size, HIDDEN)).astype(DTYPE)

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

    return Contender(epoch, None, {"all": lambda xt: (xt @ w1.T) @ w2.T})  # (N, 10)


BEFORE = "handgrad before"
CONTENDERS: dict[str, Callable[[np.ndarray, np.ndarray], Contender]] = {
    "handgrad": handgrad_contender,
    **({BEFORE: handgrad_contender} if ARGS.baseline else {}),  # its worker imports the baseline
    "PyTorch": torch_contender,
    "scikit-learn": sklearn_contender,
    FLOOR: gemm_floor,
}


def serve_worker(name: str) -> int:
    """Run in a worker process: build contender ``name`` and answer for it."""
    x, y, xt, yt = _data()
    try:
        made = [CONTENDERS[name](x, y)]
    except ImportError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        print(PROTOCOL + "skip", flush=True)
        return 0

    def accuracy() -> float | None:
        labels = made[0].labels
        return None if labels is None else float(np.mean(labels(xt) == yt))

    def reset() -> int:
        made[0] = CONTENDERS[name](x, y)  # a fresh model, initialised as the first
        return 0

    def infer(key: str) -> float:
        return _seconds(lambda: made[0].infer[key](xt))

    commands = {
        "accuracy": accuracy,
        "reset": reset,
        "infer": infer,
        "variants": lambda: " ".join(made[0].infer),
        "test_size": lambda: len(xt),
    }
    return serve(lambda seed: made[0].train(seed), None, commands)


def _seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- the driving process --------------------------------------------------------------


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


def _percent(answer: str) -> str:
    return "-" if answer == "None" else f"{float(answer):.2%}"


def training_table(
    times: dict[str, list[float]], accuracy: dict[str, str], memory: dict[str, int]
) -> list[list[str]]:
    """TIMING_HEAD's columns, then GFLOP/s, the multiple of the floor's time, memory."""
    base = statistics.median(times["handgrad"])
    flops = TRAIN_FLOPS * min(ARGS.train_size, 60000)
    floor = statistics.median(times[FLOOR]) if FLOOR in times else None
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        vs_floor = "-" if floor is None else f"{med / floor:.2f}x"
        gflops = f"{flops / med / 1e9:.1f}"
        rows.append([*timing_row(name, ts, base), _percent(accuracy[name])])
        rows[-1] += [gflops, vs_floor, _mib(memory[name])]
    return rows


def inference(workers: dict[str, Worker]) -> tuple[list[list[str]], int]:
    """Each inference call of every worker, alternating, ``--infer-reps`` times."""
    calls: dict[str, Callable[[int], float]] = {}
    for name, w in workers.items():
        for key in w.ask("variants").split():
            label = name if key == "all" else f"{name}, batch_size={DEFAULT_PREDICT_BATCH} ({key})"
            calls[label] = lambda r, w=w, key=key: float(w.ask(f"infer {key}"))
    n = int(next(iter(workers.values())).ask("test_size"))
    times = alternate(calls, ARGS.infer_reps)
    torch_speed = n / statistics.median(times["PyTorch"]) if "PyTorch" in times else None
    rows = []
    for label, ts in times.items():
        med = statistics.median(ts)
        speed = n / med
        vs = "-" if torch_speed is None else f"{speed / torch_speed:.2f}x"
        spread = [f"{1e3 * t:.2f} ms" for t in (med, min(ts), max(ts))]
        rows.append([label, *spread, f"{speed:,.0f}", vs, f"{INFER_FLOPS * n / med / 1e9:.1f}"])
    return rows, n


def convergence(workers: dict[str, Worker]) -> list[list[str]]:
    """Fresh models, epoch by epoch alternating, each tested after every epoch."""
    models = {name: w for name, w in workers.items() if name != FLOOR}
    tested: dict[str, list[float]] = {name: [] for name in models}

    def epoch_then_test(name: str, w: Worker) -> Callable[[int], float]:
        def run(e: int) -> float:
            seconds = w.epoch(e)  # what the worker timed: the test below is not counted
            tested[name].append(float(w.ask("accuracy")))
            return seconds

        return run

    for w in models.values():
        w.ask("reset")
    times = alternate({n: epoch_then_test(n, w) for n, w in models.items()}, ARGS.convergence)
    rows = []
    for name, ts in times.items():
        reached = next((e for e, a in enumerate(tested[name]) if a >= ARGS.target), None)
        if reached is None:
            to_target, epochs = f"not in {ARGS.convergence} epochs", "-"
        else:
            to_target, epochs = f"{sum(ts[: reached + 1]):.2f} s", str(reached + 1)
        rows.append([name, to_target, epochs, f"{tested[name][-1]:.2%}"])
        rows[-1].append(_mib(models[name].memory()))
    return rows


def main() -> int:
    if ARGS.worker:
        return serve_worker(ARGS.worker)
    env, before = baseline(ARGS.baseline)
    workers = start_workers(__file__, list(CONTENDERS), {BEFORE: env})
    try:
        times = alternate({name: w.epoch for name, w in workers.items()}, ARGS.rounds)
        accuracy = {name: w.ask("accuracy") for name, w in workers.items()}
        memory = {name: w.memory() for name, w in workers.items()}
        infer = inference(workers) if ARGS.infer_reps > 0 else None
        converged = convergence(workers) if ARGS.convergence > 0 else None
    finally:
        for w in workers.values():
            w.close()
    name, _, _ = OPTIMIZERS[ARGS.optimizer]
    n = min(ARGS.train_size, 60000)
    print(
        f"MLP {IN}-{HIDDEN}-{CLASSES}, {name} lr {ARGS.lr:g}, batch {ARGS.batch_size}, "
        f"{ARGS.dtype}, {n:,} images, {ARGS.rounds} epoch{'s' * (ARGS.rounds != 1)} each, "
        f"{ARGS.threads} BLAS thread(s), contenders alternating, each in its own process; "
        f"{installed_versions('torch', 'scikit-learn')}"
    )
    print(f"Hardware: {hardware()}")
    if before:
        print(before)
    print(
        f"GFLOP/s: the five matrix products of each step, {TRAIN_FLOPS * n / 1e9:.2f} GFLOP an "
        "epoch, over the median epoch (the floor's, which runs only them and the batch gather: "
        "this machine's rate at these shapes); x floor: the median epoch over the floor's; "
        "peak memory: the worker's most resident memory (data and libraries included)"
    )
    head = [*TIMING_HEAD, "GFLOP/s", "x floor", "peak memory"]
    print_table(head, training_table(times, accuracy, memory), ARGS.markdown)
    if infer is not None:
        rows, n_test = infer
        print(
            f"\nInference: predicting the {n_test:,} test images in one call (argmax of the "
            f"scores), {ARGS.infer_reps} calls each, alternating; the floor: the two forward "
            "products only"
        )
        head = ["contender", "median call", "fastest", "slowest", "images/s", "vs PyTorch"]
        print_table([*head, "GFLOP/s"], rows, ARGS.markdown)
    if converged is not None:
        target = f"{100 * ARGS.target:g}%"
        print(
            f"\nConvergence: fresh models, up to {ARGS.convergence} epochs, alternating; "
            f"test accuracy after each epoch (its time not counted)"
        )
        head = ["contender", f"time to {target}", f"epochs to {target}"]
        head += [f"accuracy after {ARGS.convergence} epochs", "peak memory"]
        print_table(head, converged, ARGS.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
