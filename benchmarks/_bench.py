"""What the benchmark scripts share: thread pinning, alternating rounds, the tables.

``pin_threads(n)`` must run before NumPy or PyTorch is imported: BLAS libraries
read their thread count from the environment when they load.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

TIMING_HEAD = (
    "contender",
    "median epoch",
    "fastest",
    "slowest",
    "all epochs",
    "vs handgrad",
    "test accuracy",
)


def add_common_arguments(
    p: argparse.ArgumentParser,
    rounds: int,
    threads_help: str,
    batch_help: str | None = None,
    threads: int = 2,
    batch: int = 128,
) -> None:
    """The options every benchmark script takes. With ``batch_help``, ``--batch-size``
    defaults to None (the script picks) and says so in its help."""
    p.add_argument(
        "--rounds", type=int, default=rounds, help=f"epochs per contender (default: {rounds})"
    )
    p.add_argument(
        "--threads", type=int, default=threads, help=f"{threads_help} (default: {threads})"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None if batch_help else batch,
        help=f"samples per step (default: {batch_help or batch})",
    )
    p.add_argument(
        "--train-size", type=int, default=60000, help="training images used (default: all 60,000)"
    )
    p.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: serve one contender


# -- contenders in processes of their own -----------------------------------------

PROTOCOL = "@@bench "  # prefix of the lines a worker answers with; other output is passed on


def peak_memory() -> int:
    """Bytes: the most memory this process has held resident so far (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else 1024 * peak  # Linux counts KiB


def serve(
    run: Callable[[int], None],
    predict: Callable[[], tuple[float, ...]] | None,
    commands: dict[str, Callable[..., Any]] | None = None,
) -> int:
    """The worker's side: answer ``epoch R`` with the seconds ``run(R)`` took,
    ``predict`` with the numbers ``predict()`` returns, ``memory`` with the process's
    peak resident bytes, and ``NAME ARG...`` with what ``commands[NAME](*ARGS)``
    returns (a string as it is, a number or a tuple of numbers as ``repr``), until
    ``quit``."""
    print(PROTOCOL + "ready", flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "epoch":
            t0 = time.perf_counter()
            run(int(rest[0]))
            print(f"{PROTOCOL}{time.perf_counter() - t0!r}", flush=True)
        elif command == "predict":
            answer = "none" if predict is None else " ".join(map(repr, predict()))
            print(PROTOCOL + answer, flush=True)
        elif command == "memory":
            print(f"{PROTOCOL}{peak_memory()}", flush=True)
        elif commands is not None and command in commands:
            out = commands[command](*rest)
            if isinstance(out, tuple):
                out = " ".join(map(repr, out))
            print(PROTOCOL + (out if isinstance(out, str) else repr(out)), flush=True)
        else:
            break
    return 0


class Worker:
    """One contender in a process of its own, driven over pipes: the script run again
    with its own arguments and ``--worker NAME``.

    Each contender gets a fresh process, as its users would run it: in one shared
    process the libraries changed each other's speed. glibc's malloc decides from
    the history of the whole process whether big arrays come back as fresh pages
    (each zeroed on first touch by the kernel), and one library's idle threads can
    still be spinning while the other works. Measured on LeNet at 2 threads: PyTorch
    took 16.7 s per epoch in a process shared with handgrad and 19.3-20.9 s alone,
    with ~6,000 page faults per step.
    """

    def __init__(
        self, script: str, name: str, wait: bool = True, env: dict[str, str] | None = None
    ) -> None:
        argv = [a for a in sys.argv[1:] if a != "--markdown"]
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, script, *argv, "--worker", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=None if env is None else {**os.environ, **env},
        )
        self.skipped: bool | None = None  # known once the worker answers
        if wait:
            self.wait_ready()

    def wait_ready(self) -> bool:
        """Wait for the worker's first answer; True when it serves (its package loaded)."""
        if self.skipped is None:
            self.skipped = self._answer() != "ready"
        return not self.skipped

    def _answer(self) -> str:
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        for line in out:
            if line.startswith(PROTOCOL):
                return line[len(PROTOCOL) :].strip()
            print(line, end="")  # the worker's own output
        raise RuntimeError(f"benchmark worker {self.name!r} exited with {self.proc.wait()}")

    def ask(self, command: str) -> str:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()
        return self._answer()

    def epoch(self, r: int) -> float:
        return float(self.ask(f"epoch {r}"))

    def memory(self) -> int:
        """The worker's peak resident memory so far, in bytes."""
        return int(self.ask("memory"))

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass  # the worker has gone already, or was told
        self.proc.wait()


def start_workers(
    script: str, names: Sequence[str], envs: dict[str, dict[str, str]] | None = None
) -> dict[str, Worker]:
    """A :class:`Worker` per contender, all starting at once; one whose package is
    missing is skipped (its worker says why on stderr). ``envs`` adds environment
    variables to some workers' (a baseline's ``PYTHONPATH``)."""
    envs = envs or {}
    started = [Worker(script, name, wait=False, env=envs.get(name)) for name in names]
    workers = {}
    try:
        for worker in started:
            if worker.wait_ready():
                workers[worker.name] = worker
            else:
                worker.close()
                print(f"skipping {worker.name}", file=sys.stderr)
    except BaseException:
        for worker in started:
            worker.close()
        raise
    return workers


def make_contenders(factories: dict[str, Callable[..., Any]], *data: Any) -> dict[str, Any]:
    """``factory(*data)`` for each contender; one whose package is missing is skipped,
    and said so on stderr."""
    made = {}
    for name, make in factories.items():
        try:
            made[name] = make(*data)
        except ImportError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
    return made


def pin_threads(n: int) -> None:
    """Tell every BLAS / OpenMP library to start ``n`` threads (before importing them)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def alternate(
    contenders: dict[str, Callable[[int], float | None]], rounds: int
) -> dict[str, list[float]]:
    """Seconds of ``run(round)`` per contender and round (the seconds ``run`` returns,
    when it measures them itself, as a :class:`Worker` does). The contenders alternate
    within every round (forward order in even rounds, reverse in odd ones), so slow
    and fast moments of a noisy machine fall on all of them."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(rounds):
        names = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in names:
            t0 = time.perf_counter()
            measured = contenders[name](r)
            times[name].append(time.perf_counter() - t0 if measured is None else measured)
    return times


def timing_row(name: str, ts: Sequence[float], base: float) -> list[str]:
    """Median, fastest, slowest, total and ratio to ``base`` of a contender's times."""
    med = statistics.median(ts)
    return [
        name,
        f"{med:.3f} s",
        f"{min(ts):.3f} s",
        f"{max(ts):.3f} s",
        f"{sum(ts):.2f} s",
        f"{med / base:.2f}x",
    ]


def print_table(head: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> None:
    """An aligned text table, and the same as Markdown when asked (only the Markdown
    under ``python -m benchmarks``, which sets ``HANDGRAD_BENCH_MARKDOWN_ONLY``)."""
    if markdown and os.environ.get("HANDGRAD_BENCH_MARKDOWN_ONLY"):
        print("| " + " | ".join(head) + " |")
        print("| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    if markdown:
        print()
        print("| " + " | ".join(head) + " |")
        print("| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |")
        for row in rows:
            print("| " + " | ".join(row) + " |")


def hardware() -> str:
    """The CPU (model, widest vector extension, cores this process may use) and
    NumPy's BLAS with the kernel it was built for: results move with them (the same
    benchmark gave PyTorch/handgrad 1.2 on one host and 2.0 on another)."""
    import numpy as np

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = dict(
                line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line
            )
        info = {k.strip(): v.strip() for k, v in info.items()}
        model = info.get("model name", model)
        if "cpu family" in info:
            model += f" (family {info['cpu family']}, model {info.get('model', '?')})"
        flags = set(info.get("flags", "").split())
    except OSError:
        pass  # not Linux: the platform's name only
    simd = next((f.upper() for f in ("avx512f", "avx2", "avx", "neon", "asimd") if f in flags), "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    blas = "BLAS unknown"
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{config['name']} {config['version']}"
        built = str(config.get("openblas configuration", "")).split()
        kernel = _runtime_kernel()
        if kernel:
            blas += f" ({kernel} kernels)"
        elif len(built) >= 2:
            blas += f" (built with {built[-2]} kernels; the one in use unknown)"
    except (KeyError, TypeError, ValueError):
        pass
    return ", ".join(x for x in (model, simd, f"{cores} cores", blas) if x)


def installed_versions(*distributions: str) -> str:
    """Python, NumPy and the installed version of each distribution named (the
    workers import them; the process that prints may not have)."""
    import importlib.metadata

    found = [f"Python {platform.python_version()}", f"NumPy {importlib.metadata.version('numpy')}"]
    for name in distributions:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def _runtime_kernel() -> str:
    """The kernel OpenBLAS picked for this CPU when it loaded (its build setting only
    names the oldest it supports: "Haswell" in a wheel that ran SkylakeX kernels
    here); threadpoolctl (scikit-learn's dependency) reads it."""
    try:
        import threadpoolctl
    except ImportError:
        return ""
    for lib in threadpoolctl.threadpool_info():
        if lib.get("internal_api") == "openblas" and lib.get("architecture"):
            return str(lib["architecture"])
    return ""


def baseline(path: str | None) -> tuple[dict[str, str], str]:
    """The environment that makes a worker import handgrad from ``path`` (a checkout,
    or its ``src``), and a line that says which code that is (its commit)."""
    if not path:
        return {}, ""
    root = os.path.abspath(path)
    src = os.path.join(root, "src") if os.path.isdir(os.path.join(root, "src")) else root
    if not os.path.isfile(os.path.join(src, "handgrad", "__init__.py")):
        raise SystemExit(f"--baseline {path}: no handgrad package in {src}")
    commit = subprocess.run(
        ["git", "-C", src, "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    where = f"commit {commit}" if commit else src
    return {"PYTHONPATH": src}, f"handgrad before: the same benchmark on {where}"


def versions() -> str:
    """Python, NumPy and whichever of torch / scikit-learn were imported."""
    import numpy as np

    found = [f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    for module in ("torch", "sklearn"):
        mod = sys.modules.get(module)
        if mod is not None:
            found.append(f"{module} {mod.__version__}")
    return ", ".join(found)
