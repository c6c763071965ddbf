"""Time the lab's answer class (``src/handgrad/lab/answer.py``) under the grader's protocol.

The protocol of ``handgrad lab grade --epochs 8 --batch-size 64 --val-fraction 0``:
MNIST's training images as float32 in [0, 1] (N, 784), shuffled every epoch,
``train_step`` on mini-batches of 64 gathered by fancy indexing (the grader's
own gather is part of the time, as it is in the grade), one BLAS thread (the
grader's default), then ``predict`` on the 10,000 test images. One round is
one epoch. Each contender is a process of its own (a :class:`_bench.Worker`),
and with ``--baseline PATH`` (another lab file, say the answer of an older
checkout) the two alternate epoch by epoch, so slow and fast moments of a noisy
machine fall on both. Both see the same batches in the same order.

    python benchmarks/bench_lab.py --baseline /tmp/old/src/handgrad/lab/answer.py --markdown
    python benchmarks/bench_lab.py --train-size 1024 --rounds 1     # a smoke test, seconds

The table gives each contender's median, fastest and slowest epoch, the sum of
all its epochs (the training time of an 8-epoch grade, less the grader's own
start-up and checks), its ratio to the answer's median and its test accuracy
after all rounds. ``--train-size N`` trains on the first N images.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path
from typing import Any

from _bench import (
    TIMING_HEAD,
    add_common_arguments,
    alternate,
    hardware,
    pin_threads,
    print_table,
    serve,
    start_workers,
    timing_row,
    versions,
)

ANSWER = Path(__file__).resolve().parents[1] / "src" / "handgrad" / "lab" / "answer.py"
HEAD = tuple("vs answer" if h == "vs handgrad" else h for h in TIMING_HEAD)


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # the grader's defaults, not the other scripts': one BLAS thread, batches of 64
    add_common_arguments(p, rounds=8, threads_help="BLAS threads", threads=1, batch=64)
    p.add_argument(
        "--answer",
        default=str(ANSWER),
        help="the lab file timed as 'answer' (default: %(default)s)",
    )
    p.add_argument("--baseline", help="another lab file, timed as 'baseline' against it")
    args = p.parse_args(argv)
    for name in ("rounds", "threads", "batch_size", "train_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


ARGS = _parse()
pin_threads(ARGS.threads)

import numpy as np  # noqa: E402  (after pinning the BLAS threads)

from handgrad.data import load_mnist  # noqa: E402


def load_class(path: str) -> Any:
    """The ``NeuralNetwork`` class of the lab file at ``path``, imported as the grader
    would: as a module of its own, not as part of handgrad."""
    spec = importlib.util.spec_from_file_location("lab_submission", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.NeuralNetwork


def _pixels(images: np.ndarray) -> np.ndarray:
    """``(N, 784)`` float32 in [0, 1], as the grader hands them over."""
    x = images.reshape(len(images), -1).astype(np.float32)
    x /= np.float32(255)
    return x


def serve_worker(name: str) -> int:
    """Run in a worker process: train contender ``name``, one epoch per request."""
    path = ARGS.answer if name == "answer" else ARGS.baseline
    model = load_class(path)()
    d = load_mnist()
    n = min(ARGS.train_size, len(d.x_train))
    x, y = _pixels(d.x_train[:n]), d.y_train[:n].astype(np.int64)
    x_test, y_test = _pixels(d.x_test), d.y_test
    rng = np.random.default_rng(0)  # the same batches, in the same order, for everyone
    bs = ARGS.batch_size

    def epoch(r: int) -> None:
        order = rng.permutation(n)
        for s in range(0, n, bs):
            idx = order[s : s + bs]
            float(model.train_step(x[idx], y[idx]))  # the grader reads every loss

    def accuracy() -> tuple[float, ...]:
        return (float(np.mean(model.predict(x_test) == y_test)),)

    return serve(epoch, accuracy)


def main() -> int:
    if ARGS.worker:
        return serve_worker(ARGS.worker)
    names = ["answer"] + (["baseline"] if ARGS.baseline else [])
    workers = start_workers(__file__, names)
    try:
        times = alternate({name: w.epoch for name, w in workers.items()}, ARGS.rounds)
        accuracy = {name: float(w.ask("predict")) for name, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    if "answer" not in times:
        print("the answer could not be timed (its worker says why above)", file=sys.stderr)
        return 1
    base = statistics.median(times["answer"])
    rows = [[*timing_row(name, ts, base), f"{accuracy[name]:.2%}"] for name, ts in times.items()]
    n = min(ARGS.train_size, 60000)
    threads = f"{ARGS.threads} BLAS thread{'s' * (ARGS.threads > 1)}"
    print(
        f"Lab NeuralNetwork 784-128-10, batch {ARGS.batch_size}, {n:,} images, "
        f"{ARGS.rounds} epochs each, {threads}, contenders alternating; {versions()}"
    )
    for name in names:
        print(f"{name}: {ARGS.answer if name == 'answer' else ARGS.baseline}")
    print(f"Hardware: {hardware()}")
    print_table(HEAD, rows, ARGS.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
