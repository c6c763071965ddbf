"""vectorization: one Linear layer's forward pass written four ways, timed.

``out = x @ W.T + b`` for a batch ``x (N, 784)`` and ``W (128, 784)``, the first layer
of the course's MLP, computed

1. as Python loops over samples, outputs and inputs (on Python lists, the fastest
   form of pure Python: indexing a NumPy array element by element is slower still);
2. row by row: one NumPy matrix-vector product ``W @ x[n] + b`` per sample;
3. as one NumPy expression without a matrix product: ``(x[:, None, :] * W).sum(-1)``,
   the same multiply-adds run by NumPy's compiled (SIMD) loops;
4. as one matrix product, ``x @ W.T + b`` (BLAS's GEMM), the formula of ``nn.Linear``
   (whose output every version is checked against).

Each is timed several times and the median is reported, at several batch sizes,
on one core (BLAS on one thread; one more column gives the matrix product on every
thread). The notes this comes from credit SIMD for the speed-up. The table
separates the causes: 1 -> 3 removes the interpreter (one bytecode dispatch and a
boxed float per multiply-add), 3 -> 4 is what a tuned GEMM adds on top of SIMD loops
(blocking for the caches, fused multiply-adds), and float32 against float64 GEMM
shows how much the SIMD width itself gives (twice the lanes for float32).

BLAS's thread count is set with ``handgrad.threads`` (what ``handgrad
train`` uses): NumPy has no call for it, and on a shared machine a second BLAS thread that
waits for a busy core can make one product slower than sixteen.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import numpy as np

from handgrad import get_blas_threads, nn, threads
from handgrad.studies._base import Context, Report, Table, pyplot

Forward = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def forward_loops(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Three Python loops: ``out[n][o] = b[o] + sum_i x[n][i] * w[o][i]``."""
    xs, ws, bs = x.tolist(), w.tolist(), b.tolist()
    out = []
    for row in xs:
        out_row = []
        for w_row, bias in zip(ws, bs, strict=True):
            total = bias
            for xi, wi in zip(row, w_row, strict=True):
                total += xi * wi
            out_row.append(total)
        out.append(out_row)
    return np.array(out, dtype=x.dtype)


def forward_rows(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One matrix-vector product per sample: ``out[n] = w @ x[n] + b``."""
    out = np.empty((x.shape[0], w.shape[0]), dtype=x.dtype)  # (N, D_out)
    for n in range(x.shape[0]):
        out[n] = w @ x[n] + b  # (D_out, D_in) @ (D_in,) -> (D_out,)
    return out


def forward_broadcast(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Every product at once, then a sum: NumPy's SIMD loops, no BLAS."""
    return (x[:, None, :] * w[None, :, :]).sum(axis=2) + b  # (N, D_out, D_in) -> (N, D_out)


def linear_layer(w: np.ndarray, b: np.ndarray) -> nn.Linear:
    """An ``nn.Linear`` holding ``w`` and ``b``."""
    layer = nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype)
    layer.weight.data[...] = w
    assert layer.bias is not None
    layer.bias.data[...] = b
    return layer


def median_seconds(fn: Callable[[], object], repeats: int, min_seconds: float = 0.005) -> float:
    """Median time of one call of ``fn`` over ``repeats`` measurements; each measurement
    runs ``fn`` often enough to last ``min_seconds``, so fast calls are not lost in the
    timer's resolution."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        if time.perf_counter() - start >= min_seconds or number >= 1 << 16:
            break
        number *= 2
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return float(np.median(times))


def time_forwards(
    batch: int, rng: np.random.Generator, d_in: int = 784, d_out: int = 128, repeats: int = 5
) -> dict[str, float]:
    """Seconds per forward pass of each version (medians), and the largest difference
    between any version's output and ``nn.Linear``'s."""
    x = rng.random((batch, d_in), dtype=np.float32)
    w = (rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)).astype(np.float32)
    b = rng.standard_normal(d_out).astype(np.float32)
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    reference = linear_layer(w, b).forward(x)
    result = {"batch": float(batch)}
    versions: dict[str, Callable[[], np.ndarray]] = {
        "loops": lambda: forward_loops(x, w, b),
        "rows": lambda: forward_rows(x, w, b),
        "broadcast": lambda: forward_broadcast(x, w, b),
        "matmul": lambda: x @ w.T + b,
        "matmul64": lambda: x64 @ w64.T + b64,
    }
    error = 0.0
    with threads(1):  # an MLP's threads are BLAS's: one, then every core
        for name, fn in versions.items():
            error = max(error, float(np.max(np.abs(fn() - reference))))
            # the loops take seconds at large batches: fewer repeats there
            result[name] = median_seconds(fn, max(3, repeats // 3) if name == "loops" else repeats)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if get_blas_threads() is not None and (cpus or 1) > 1:
        with threads(cpus or 1):  # every core this process may use
            result["matmul_threads"] = median_seconds(versions["matmul"], repeats)
        result["threads"] = float(cpus or 1)
    result.setdefault("threads", 1.0)
    result["max_error"] = error
    return result


def blas_name() -> str:
    """NumPy's BLAS as NumPy reports it (e.g. ``scipy-openblas 0.3.31``)."""
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy: no dict form
        return "unknown BLAS"


def run(ctx: Context) -> Report:
    report = Report("vectorization", "Vectorization: one Linear layer's forward, four ways")
    rng = ctx.rng()
    batches = ctx.pick([1, 16], [1, 16, 64, 256])
    repeats = ctx.pick(5, 15)
    results = [
        time_forwards(n, rng, repeats=repeats)
        for n in ctx.progress(batches, "vectorization", total=len(batches))
    ]

    def ms(s: float) -> str:
        return f"{1e3 * s:.3g} ms"

    rows = []
    for r in results:
        rows.append(
            [
                str(int(r["batch"])),
                ms(r["loops"]),
                ms(r["rows"]),
                ms(r["broadcast"]),
                ms(r["matmul"]),
                ms(r.get("matmul_threads", r["matmul"])),
                f"{r['loops'] / r['matmul']:.0f}x",
                f"{r['rows'] / r['matmul']:.1f}x",
                f"{r['broadcast'] / r['matmul']:.1f}x",
                f"{2 * r['batch'] * 784 * 128 / r['matmul'] / 1e9:.1f}",
            ]
        )
    simd = np.show_config(mode="dicts").get("SIMD Extensions", {}).get("found", [])
    caption = (
        f"out = x @ W.T + b, W 128x784, float32, median of {repeats} runs on one core "
        f"(BLAS on 1 thread) unless said; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, NumPy {np.__version__} with {blas_name()}"
        + (f", SIMD {'/'.join(simd)}" if simd else "")
    )
    threads = int(results[0]["threads"])
    report.tables.append(
        Table(
            [
                "batch",
                "loops",
                "row by row",
                "broadcast",
                "matmul",
                f"matmul, {threads} thread{'s' * (threads > 1)}",
                "loops/matmul",
                "rows/matmul",
                "broadcast/matmul",
                "matmul GFLOP/s",
            ],
            rows,
            caption,
        )
    )
    report.numbers.update(results=results, max_error=max(r["max_error"] for r in results))

    big = results[-1]
    n = int(big["batch"])
    flops = 2 * n * 784 * 128
    report.findings.append(
        f"At batch {n}, Python loops take {big['loops'] / big['matmul']:.0f}x the time of one "
        f"matrix product, row by row {big['rows'] / big['matmul']:.1f}x, the broadcast "
        f"{big['broadcast'] / big['matmul']:.1f}x; all versions agree with nn.Linear to "
        f"{report.numbers['max_error']:.1e}."
    )
    interpreter = big["loops"] / big["broadcast"]
    width = big["matmul64"] / big["matmul"]
    report.findings.append(
        f"Python loops reach {flops / big['loops'] / 1e6:.0f} MFLOP/s, one matrix product "
        f"{flops / big['matmul'] / 1e9:.1f} GFLOP/s. Removing the interpreter (loops -> "
        f"broadcast, the same multiply-adds in compiled loops) gives {interpreter:.0f}x; "
        f"BLAS on top of NumPy's own SIMD loops (broadcast -> matmul) "
        f"{big['broadcast'] / big['matmul']:.1f}x."
    )
    report.findings.append(
        f"float32 GEMM is {width:.1f}x as fast as float64 at batch {n}: twice the SIMD "
        f"lanes buy at most 2x, so here the interpreter's overhead ({interpreter:.0f}x) is "
        f"{'the bigger' if interpreter > width else 'not the bigger'} factor."
    )
    if "matmul_threads" in big:
        ratio = big["matmul_threads"] / big["matmul"]
        report.findings.append(
            f"On {threads} BLAS threads the product at batch {n} took {ratio:.2f}x its "
            "one-thread time"
            + (
                ": slower, as when another thread waits for a core that other work holds."
                if ratio > 1
                else "."
            )
        )
    small = results[0]
    r1, rn = small["rows"] / small["matmul"], big["rows"] / big["matmul"]
    report.findings.append(
        f"Row by row takes {r1:.1f}x the matrix product's time at batch "
        f"{int(small['batch'])} and {rn:.1f}x at batch {n}"
        + (
            ": one product per sample pays NumPy's call overhead per sample and reads W "
            "again for each, so the gap grows with the batch."
            if rn > r1
            else "."
        )
    )

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    labels = {
        "loops": "Python loops",
        "rows": "row by row (matrix-vector)",
        "broadcast": "broadcast multiply + sum",
        "matmul": "one matrix product (float32)",
        "matmul64": "one matrix product (float64)",
    }
    xs = [r["batch"] for r in results]
    for key, label in labels.items():
        ax.plot(xs, [1e3 * r[key] for r in results], "o-", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(
        xlabel="batch size",
        ylabel="ms per forward pass (median)",
        title="Linear 784 -> 128: the same arithmetic, four ways",
    )
    ax.legend(fontsize=8)
    path = ctx.figure("vectorization")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.figures.append(path)
    return report
