"""Where one MLP training step's time goes, operation by operation, inside ``fit``.

Trains the 784-128-10 network with ``handgrad.train.fit`` on MNIST (float32 in
[0, 1], prepared once, as in ``bench_mlp.py``) and times every layer's forward and
backward, the loss, ``zero_grad`` and the optimizer's ``step`` by wrapping those
methods of the objects fit is given (the code that runs is fit's own). The rest of
fit's step (the batch gather, the divergence guard, the bookkeeping) is the step's
time minus the timed parts. The first epoch warms up; the table sums the others.

    python benchmarks/profile_step.py --threads 1 --optimizer adam --batch-size 128 --markdown

The wrappers cost about a microsecond per call (shown on their own row, measured),
so the table's total is a little above an unwrapped epoch's; ``bench_mlp.py``
times the unwrapped epoch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _bench import pin_threads, print_table


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default: 1)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="(default: adam)")
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-3 Adam, 0.1 SGD)")
    p.add_argument("--batch-size", type=int, default=128, help="(default: 128)")
    p.add_argument("--epochs", type=int, default=3, help="the first one warms up (default: 3)")
    p.add_argument("--train-size", type=int, default=60000, help="(default: all 60,000)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    p.add_argument("--json", metavar="PATH", help="also write the microseconds per step as JSON")
    return p.parse_args(argv)


ARGS = _parse()
pin_threads(ARGS.threads)

import numpy as np  # noqa: E402  (after pinning the BLAS threads)

from handgrad import nn, optim  # noqa: E402
from handgrad.data import load_mnist  # noqa: E402
from handgrad.train import fit  # noqa: E402

TOTALS: dict[str, float] = defaultdict(float)
ON = [False]  # timing switched on (not during the warm-up epoch)


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    clock = time.perf_counter

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            if ON[0]:
                TOTALS[name] += clock() - t0

    return wrapper


def _wrap(obj: Any, method: str, name: str) -> None:
    if hasattr(obj, method):
        setattr(obj, method, _timed(name, getattr(obj, method)))


def _wrapper_cost() -> float:
    """Seconds one wrapped call costs beyond the call itself."""

    def nothing() -> None:
        return None

    wrapped, n = _timed("-", nothing), 200_000
    t0 = time.perf_counter()
    for _ in range(n):
        nothing()
    bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n):
        wrapped()
    return max(0.0, (time.perf_counter() - t0 - bare) / n)


def main() -> int:
    d = load_mnist()
    n = min(ARGS.train_size, len(d.x_train))
    dtype = np.dtype(ARGS.dtype)
    x = d.x_train[:n].reshape(n, -1).astype(dtype) / dtype.type(255)
    y = d.y_train[:n]
    rng = np.random.default_rng(0)
    layers = [
        nn.Linear(784, 128, rng=rng, dtype=dtype),
        nn.ReLU(),
        nn.Linear(128, 10, rng=rng, dtype=dtype),
    ]
    model = nn.Sequential(*layers)
    loss = nn.CrossEntropyLoss()
    if ARGS.optimizer == "adam":
        opt: Any = optim.Adam(model.parameters(), lr=ARGS.lr or 1e-3)
    else:
        opt = optim.SGD(model.parameters(), lr=ARGS.lr or 0.1)
    calls = 0
    for i, layer in enumerate(layers):
        label = f"{i} {type(layer).__name__}"
        _wrap(layer, "forward", f"{label} forward")
        _wrap(layer, "backward", f"{label} backward")
        _wrap(layer, "backward_params", f"{label} backward (weights only)")
        calls += 2
    _wrap(loss, "forward", "loss forward")
    _wrap(loss, "backward", "loss backward")
    _wrap(opt, "zero_grad", "zero_grad")
    _wrap(opt, "step", "optimizer step")
    calls += 4
    steps = -(-n // ARGS.batch_size)
    fit(model, loss, opt, (x, y), epochs=1, batch_size=ARGS.batch_size, rng=0, verbose=0)
    ON[0] = True
    t0 = time.perf_counter()
    for epoch in range(1, ARGS.epochs):
        fit(model, loss, opt, (x, y), epochs=1, batch_size=ARGS.batch_size, rng=epoch, verbose=0)
    total = time.perf_counter() - t0
    ON[0] = False
    timed_steps = steps * (ARGS.epochs - 1)
    per_step = {name: seconds / timed_steps for name, seconds in TOTALS.items()}
    wrappers = calls * _wrapper_cost()
    rest = total / timed_steps - sum(per_step.values()) - wrappers
    per_step["timing wrappers (this script's own cost)"] = wrappers
    per_step["rest of fit's step: gather, guard, bookkeeping"] = rest
    step = total / timed_steps
    rows = [
        [name, f"{seconds * 1e6:.1f}", f"{seconds / step:.1%}"]
        for name, seconds in per_step.items()
    ]
    rows.append(["whole step", f"{step * 1e6:.1f}", "100.0%"])
    lr = ARGS.lr or (1e-3 if ARGS.optimizer == "adam" else 0.1)
    print(
        f"784-128-10 {ARGS.dtype}, {ARGS.optimizer} lr {lr:g}, "
        f"batch {ARGS.batch_size}, {n:,} images, {ARGS.threads} BLAS thread(s); "
        f"{ARGS.epochs - 1} timed epochs ({total:.2f} s, {timed_steps} steps)"
    )
    print_table(("operation", "µs per step", "share"), rows, ARGS.markdown)
    if ARGS.json:
        micro = {name: seconds * 1e6 for name, seconds in per_step.items()}
        Path(ARGS.json).write_text(json.dumps({**micro, "whole step": step * 1e6}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
