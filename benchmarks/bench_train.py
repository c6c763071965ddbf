"""Time ``handgrad train`` at its defaults: the whole command, and its time to 97%.

Each run is the command a user types, ``handgrad train`` (784-128-10, Adam with a
one-cycle schedule, 15 epochs of 54,000 images, 6,000 held out for validation),
in a fresh process, with ``--no-save``; the runs alternate with those of another
checkout when ``--baseline`` names one. For every run the table gives the
process's wall time (start-up, loading MNIST, training, testing), the training
clock (every epoch, validation included), the time to 97% validation accuracy
on the training clock without the validation passes, and the test accuracy.

    python benchmarks/bench_train.py --rounds 3 --markdown
    python benchmarks/bench_train.py --rounds 3 --baseline ../handgrad-old --markdown

``--epochs N`` passes ``--epochs N`` on (a smoke test: ``--epochs 1 --rounds 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from _bench import baseline, hardware, installed_versions, print_table

MARK = "@@train "


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=3, help="runs of each (default: 3)")
    p.add_argument("--target", type=float, default=0.97, help="validation accuracy (default: 0.97)")
    p.add_argument("--baseline", metavar="DIR", help="also run handgrad from another checkout")
    p.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    p.add_argument("--epochs", type=int, help="passed to handgrad train (default: its own)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.extra = [] if args.epochs is None else ["--epochs", str(args.epochs)]
    return args


def worker(extra: list[str]) -> int:
    """Run ``handgrad train`` in this process, recording each epoch, and print it."""
    import handgrad.train
    from handgrad.callbacks import Callback
    from handgrad.cli import main

    epochs: list[dict[str, float]] = []

    class Record(Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
            seconds = logs["seconds"] - self.trainer.last_eval_seconds
            epochs.append({"train": seconds, "val_accuracy": logs.get("val_accuracy", 0.0)})

    fit = handgrad.train.fit

    def recording_fit(*args: Any, **kwargs: Any) -> Any:
        kwargs["callbacks"] = [*kwargs.get("callbacks", ()), Record()]
        return fit(*args, **kwargs)

    handgrad.train.fit = recording_fit  # the command imports fit when it trains
    t0 = time.perf_counter()
    code = main(["train", "--no-save", *extra])
    wall = time.perf_counter() - t0
    print(MARK + json.dumps({"code": code, "epochs": epochs, "main": wall}), flush=True)
    return 0


def _run(env: dict[str, str], extra: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *extra],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"handgrad train failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(lines[-1][len(MARK) :])
    result["wall"] = wall
    test = [ln for ln in proc.stdout.splitlines() if ln.startswith("test accuracy")]
    result["test"] = test[-1].split()[2] if test else "-"
    return result


def _to_target(epochs: list[dict[str, float]], target: float) -> float | None:
    clock = 0.0
    for e in epochs:
        clock += e["train"]
        if e["val_accuracy"] >= target:
            return clock
    return None


def _cell(values: list[float], unit: str = " s") -> str:
    return f"{statistics.median(values):.2f}{unit} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    args = _parse()
    if args.worker:
        return worker(args.extra)
    env, before = baseline(args.baseline)
    contenders = {"handgrad": {}, **({"handgrad before": env} if args.baseline else {})}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for r in range(args.rounds):
        names = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in names:
            runs[name].append(_run(contenders[name], args.extra))
    target = f"{100 * args.target:g}%"
    head = ["contender", "process wall", "training", "epoch (median)"]
    head += [f"to {target} val (training only)", "epochs to it", "test accuracy"]
    rows = []
    for name, results in runs.items():
        reached = [_to_target(r["epochs"], args.target) for r in results]
        hit = [t for t in reached if t is not None]
        first = next(
            (i + 1 for i, e in enumerate(results[0]["epochs"]) if e["val_accuracy"] >= args.target),
            None,
        )
        epoch_times = [e["train"] for r in results for e in r["epochs"]]
        rows.append(
            [
                name,
                _cell([r["wall"] for r in results]),
                _cell([sum(e["train"] for e in r["epochs"]) for r in results]),
                f"{statistics.median(epoch_times):.3f} s",
                _cell(hit) if len(hit) == len(reached) else "not reached",
                "-" if first is None else str(first),
                " / ".join(sorted({r["test"] for r in results})),
            ]
        )
    extra = " ".join(args.extra)
    print(
        f"handgrad train --no-save {extra}".rstrip()
        + f": {args.rounds} runs each, alternating, each a fresh process; medians (range); "
        f"{installed_versions()}"
    )
    print(f"Hardware: {hardware()}")
    if before:
        print(before)
    print_table(head, rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
