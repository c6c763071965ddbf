"""How many threads should a library run get? 1 against 2, idle and under load.

Each contender is one ``fit`` epoch in a process of its own (a :class:`Worker`),
with its threads set by ``handgrad.threads`` after NumPy is loaded, as a script
would. The contenders alternate within every round. ``--load`` adds one process
that keeps a core busy the whole time (another user's job, a browser, a second
training run): what a 2-core laptop or CI runner usually has.

- ``mlp-T``: the 784-128-10 MLP, Adam, ``--batch-size`` (default 128), 60,000
  images, BLAS on T threads (handgrad's own pool on 1).
- ``lenet-T``: the course's LeNet on ``--cnn-size`` images (default 10,000),
  handgrad's pool on T threads, BLAS on 1 inside each.

OpenBLAS starts a thread per core unless told otherwise, so on a 2-core machine
``mlp-2`` is also what a library run of the MLP got before ``fit`` chose threads.

python benchmarks/bench_threads.py --rounds 5 --markdown
python benchmarks/bench_threads.py --rounds 5 --load --markdown
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from _bench import alternate, hardware, print_table, serve, start_workers

CONTENDERS = ("mlp-1", "mlp-2", "lenet-1", "lenet-2")
BUSY = "while True: pass"


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="epochs per contender (default: 5)")
    p.add_argument("--batch-size", type=int, default=128, help="the MLP's batch (default: 128)")
    p.add_argument("--cnn-size", type=int, default=10000, help="LeNet's images (default: 10000)")
    p.add_argument(
        "--train-size", type=int, default=60000, help="the MLP's images (default: all 60,000)"
    )
    p.add_argument("--load", action="store_true", help="keep one core busy with another process")
    p.add_argument("--only", default=",".join(CONTENDERS), help="contenders, comma-separated")
    p.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _worker(name: str, args: argparse.Namespace) -> int:
    import numpy as np

    import handgrad
    from handgrad.data import load_mnist
    from handgrad.nn import CrossEntropyLoss
    from handgrad.optim import Adam
    from handgrad.recipes import build_lenet, build_mlp
    from handgrad.train import fit

    data = load_mnist()
    kind, _, threads = name.partition("-")
    rng = np.random.default_rng(0)
    if kind == "mlp":
        n, batch = args.train_size, args.batch_size
        x, y = data.x_train[:n], data.y_train[:n]
        model = build_mlp(784, [128], 10, rng=rng)
    else:
        x, y, batch = data.x_train[: args.cnn_size], data.y_train[: args.cnn_size], 128
        model = build_lenet((28, 28), 10, rng=rng)
    optimizer = Adam(model.parameters(), lr=1e-3)
    loss = CrossEntropyLoss()
    fit(model, loss, optimizer, (x[:256], y[:256]), epochs=1, batch_size=batch, rng=rng)  # warm

    def epoch(r: int) -> None:
        with handgrad.threads(int(threads), model):
            fit(model, loss, optimizer, (x, y), epochs=1, batch_size=batch, rng=rng)

    return serve(epoch, None)


def main() -> int:
    args = _parse()
    if args.worker:
        return _worker(args.worker, args)
    print(hardware())
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if args.load else None
    try:
        workers = start_workers(__file__, args.only.split(","))
        try:
            times = alternate({n: w.epoch for n, w in workers.items()}, args.rounds)
        finally:
            for w in workers.values():
                w.close()
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    condition = "one other busy process" if args.load else "idle"
    print(f"{condition}; batch {args.batch_size}; {args.rounds} epochs each, alternated")
    rows = []
    for kind in ("mlp", "lenet"):
        ones = times.get(f"{kind}-1")
        for name, ts in times.items():
            if not name.startswith(kind):
                continue
            med = statistics.median(ts)
            ratio = f"{med / statistics.median(ones):.2f}x" if ones else "-"
            rows.append([name, f"{med:.2f} s", f"{min(ts):.2f} s", f"{max(ts):.2f} s", ratio])
    head = ("contender", "median epoch", "fastest", "slowest", "vs 1 thread")
    print_table(head, rows, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
