"""Time training epochs of the course's LeNet: handgrad vs PyTorch (CPU) vs the GEMM floor.

The network is the course's: conv 32 3x3 -> ReLU -> max-pool 2 -> conv 64 3x3 ->
ReLU -> max-pool 2 -> fc 128 -> ReLU -> fc 10, on MNIST as float32 (N, 1, 28, 28)
in [0, 1], Adam (lr 1e-3), batch 128, one epoch per call. The contenders alternate
within every round (forward order in even rounds, reverse in odd ones).

"GEMM floor" times only the matrix products an im2col network cannot avoid, for
every batch of an epoch, on NumPy's BLAS with all the threads: the two
convolutions' forward products and weight gradients, the second convolution's
input gradient (the first needs none: its input is the data), and the three
products of each fully connected layer.

    python benchmarks/bench_cnn.py --rounds 5 --threads 1 --markdown
    python benchmarks/bench_cnn.py --profile          # per-layer times of one step
    python benchmarks/bench_cnn.py --layouts          # NCHW vs NHWC im2col + GEMM
    python benchmarks/bench_cnn.py --chunks           # images per parallel chunk

handgrad runs ``--threads`` threads of its own (``handgrad.set_num_threads``)
with BLAS on one thread each; PyTorch runs ``torch.set_num_threads(--threads)``;
the GEMM floor runs BLAS on ``--threads`` threads. Also reported: inference
throughput at batch 1000 on the 10,000 test images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from _bench import (
    PROTOCOL,
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


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(p, rounds=5, threads_help="threads per contender")
    p.add_argument("--profile", action="store_true", help="per-layer profile of one step instead")
    p.add_argument("--layouts", action="store_true", help="NCHW vs NHWC im2col+GEMM instead")
    p.add_argument("--chunks", action="store_true", help="compare chunk sizes instead")
    return p.parse_args(argv)


ARGS = _parse()
pin_threads(ARGS.threads)

import numpy as np  # noqa: E402  (after pinning the BLAS threads)

import handgrad  # noqa: E402
from handgrad import _parallel, nn, optim  # noqa: E402
from handgrad._blas import set_blas_threads  # noqa: E402
from handgrad.data import load_mnist  # noqa: E402
from handgrad.nn.fused import ConvMaxPool  # noqa: E402
from handgrad.train import fit, predict  # noqa: E402

Epoch = Callable[[int], None]
Predict = Callable[[np.ndarray], np.ndarray]
LR, EVAL_BATCH = 1e-3, 1000


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = load_mnist()
    n = min(ARGS.train_size, len(d.x_train))
    x = d.x_train[:n, None].astype(np.float32) / np.float32(255)  # (N, 1, 28, 28)
    xt = d.x_test[:, None].astype(np.float32) / np.float32(255)
    return x, d.y_train[:n], xt, d.y_test


def lenet(rng: np.random.Generator) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1600, 128, rng=rng),
        nn.ReLU(),
        nn.Linear(128, 10, rng=rng),
    )


def _handgrad_threads() -> None:
    """handgrad's own threads split the batch; BLAS stays on one thread inside them."""
    handgrad.set_num_threads(ARGS.threads)
    set_blas_threads(1)


def handgrad_contender(x: np.ndarray, y: np.ndarray) -> tuple[Epoch, Predict]:
    model = lenet(np.random.default_rng(0))
    loss = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=LR)

    def epoch(seed: int) -> None:
        _handgrad_threads()
        fit(model, loss, opt, (x, y), epochs=1, batch_size=ARGS.batch_size, rng=seed)

    def pred(xt: np.ndarray) -> np.ndarray:
        _handgrad_threads()
        return predict(model, xt, batch_size=EVAL_BATCH)

    return epoch, pred


def torch_contender(x: np.ndarray, y: np.ndarray) -> tuple[Epoch, Predict]:
    import torch

    torch.set_num_threads(ARGS.threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(1600, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
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
        xt_all = torch.from_numpy(xt)
        with torch.no_grad():
            return np.concatenate(
                [
                    model(xt_all[s : s + EVAL_BATCH]).argmax(1).numpy()
                    for s in range(0, len(xt), EVAL_BATCH)
                ]
            )

    return epoch, pred


def gemm_floor(x: np.ndarray, y: np.ndarray) -> tuple[Epoch, None]:
    rng = np.random.default_rng(0)
    b = ARGS.batch_size

    def mat(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    cols1, w1, d1 = mat(b * 676, 9), mat(32, 9), mat(b * 676, 32)  # conv1 as im2col
    cols2, w2, d2 = mat(b * 121, 288), mat(64, 288), mat(b * 121, 64)  # conv2
    h, w3, dh = mat(b, 1600), mat(128, 1600), mat(b, 128)  # fc 1600 -> 128
    z, w4, dz = mat(b, 128), mat(10, 128), mat(b, 10)  # fc 128 -> 10

    def epoch(seed: int) -> None:
        set_blas_threads(ARGS.threads)
        for s in range(0, len(x), b):
            m = min(b, len(x) - s)
            _ = cols1[: m * 676] @ w1.T  # conv1 forward (M, 32)
            _ = d1[: m * 676].T @ cols1[: m * 676]  # conv1 dW (32, 9)
            _ = cols2[: m * 121] @ w2.T  # conv2 forward (M, 64)
            _ = d2[: m * 121].T @ cols2[: m * 121]  # conv2 dW (64, 288)
            _ = d2[: m * 121] @ w2  # conv2 dcols (M, 288)
            _ = h[:m] @ w3.T  # fc1 forward
            _ = dh[:m].T @ h[:m]  # fc1 dW
            _ = dh[:m] @ w3  # fc1 dx
            _ = z[:m] @ w4.T  # fc2 forward
            _ = dz[:m].T @ z[:m]  # fc2 dW
            _ = dz[:m] @ w4  # fc2 dx

    return epoch, None


CONTENDERS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[Epoch, Predict | None]]] = {
    "handgrad": handgrad_contender,
    "PyTorch": torch_contender,
    "GEMM floor": gemm_floor,
}


def _median_ms(fn: Callable[[], Any], repeats: int = 15) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def _label(layer: Any, written: dict[int, int]) -> str:
    """``"<written index> <class>"``; a fused convolution names the modules it runs."""
    parts = [layer] if not isinstance(layer, ConvMaxPool) else [layer.conv, layer.pool]
    if isinstance(layer, ConvMaxPool) and layer.relu is not None:
        parts.insert(1, layer.relu)
    index = "+".join(str(written[id(m)]) for m in parts)
    return f"{index} {'+'.join(type(m).__name__ for m in parts)}"


def profile() -> None:
    """Forward and backward of every layer in one training step, in the order
    ``Sequential`` runs them (each Conv2d + ReLU + MaxPool2d fused into one step;
    rows keep the written indices), then the pieces of each fused convolution
    timed on their own."""
    x, y, _, _ = _data()
    _handgrad_threads()
    model = lenet(np.random.default_rng(0))
    loss = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=LR)
    layers = model._order()  # what forward/backward run: not the written order
    written = {id(layer): i for i, layer in enumerate(model)}
    labels = [_label(layer, written) for layer in layers]
    xb, yb = x[: ARGS.batch_size], y[: ARGS.batch_size]
    times: dict[str, list[float]] = {}

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        times.setdefault(key, []).append(time.perf_counter() - t0)
        return out

    for _ in range(25):
        h = xb
        for i, layer in enumerate(layers):
            h = timed(f"{labels[i]} forward", lambda: layer.forward(h))  # noqa: B023
        d = timed("loss forward+backward", lambda: (loss.forward(h, yb), loss.backward())[1])  # noqa: B023
        opt.zero_grad()
        for i in reversed(range(len(layers))):
            name = f"{labels[i]} backward"
            if i == 0:
                timed(name, lambda: layers[0].backward_params(d))  # noqa: B023
            else:
                d = timed(name, lambda: layers[i].backward(d))  # noqa: B023
        timed("Adam step", opt.step)
    step = sum(statistics.median(ts[5:]) for ts in times.values())
    rows = [[k, f"{1e3 * statistics.median(ts[5:]):.2f}"] for k, ts in times.items()]
    rows.append(["whole step (sum)", f"{1e3 * step:.2f}"])
    print(f"LeNet training step, batch {ARGS.batch_size}, {ARGS.threads} thread(s); {versions()}")
    print(f"Hardware: {hardware()}")
    print_table(["layer", "ms (median of 20)"], rows, ARGS.markdown)

    size = min(_parallel.CHUNK, ARGS.batch_size)
    chunks = -(-ARGS.batch_size // size)
    print(
        f"\nInside each fused convolution, one thread: one chunk of {size} images, "
        f"times {chunks} chunks (a step's worth):"
    )
    set_blas_threads(1)
    handgrad.set_num_threads(1)
    rows = []
    h = xb
    for i, layer in enumerate(layers):
        if isinstance(layer, ConvMaxPool):
            rows.extend(_fused_pieces(layer, h[:size], chunks, need_dx=i > 0))
        h = layer.forward(h)
    print_table(["piece", "ms per step (median of 15)"], rows, ARGS.markdown)


def _fused_pieces(layer: Any, h: np.ndarray, chunks: int, need_dx: bool) -> list[list[str]]:
    """Time each piece of a fused convolution's forward and backward on one chunk
    (stride-1, unpadded LeNet convolutions)."""
    from handgrad.nn import fused

    conv, (p, q) = layer.conv, layer.pool.kernel_size
    w = conv.weight.data
    c_out, c, kh, kw = w.shape
    n, hh, ww = h.shape[0], h.shape[2] - kh + 1, h.shape[3] - kw + 1
    pooled = (hh // p, ww // q)
    width = max(kh * kw * c + 1, fused.MIN_WIDTH)
    xp = np.ascontiguousarray(h.transpose(0, 2, 3, 1))
    store: dict[object, np.ndarray] = {}

    def patches() -> np.ndarray:
        return fused._patch_rows(
            xp,
            width,
            (kh, kw),
            pooled,
            (p, q),
            (1, 1),
            (1, 1),
            lambda shape: fused.scratch(store, shape, shape, xp.dtype),
        )

    cols = patches()
    rng = np.random.default_rng(0)
    w_mat = rng.standard_normal((c_out, width), dtype=np.float32)
    slabs = np.empty((len(cols), c_out), np.float32)
    s5 = slabs.reshape(n, p * q, *pooled, c_out)
    out = np.empty((n, *pooled, c_out), np.float32)
    arg = np.empty(out.shape, np.uint8)
    np.matmul(cols, w_mat.T, out=slabs)
    fused.pool_slabs(s5, out, arg, layer.relu is not None)
    d = rng.standard_normal(out.shape, dtype=np.float32)
    dslabs = np.empty_like(s5)
    views = [dslabs[:, t] for t in range(p * q)]
    d2 = dslabs.reshape(-1, c_out)
    dxp = np.zeros(xp.shape, np.float32)
    part = np.empty((len(d2), c), np.float32)
    pieces = {
        "forward: im2col rows in pooling order": patches,
        "forward: GEMM": lambda: np.matmul(cols, w_mat.T, out=slabs),
        "forward: max-pool (+ ReLU) of the slabs": lambda: fused.pool_slabs(
            s5, out, arg, layer.relu is not None
        ),
        "backward: gradient to each window's winner": lambda: fused.route_to_winners(
            d, arg, views, add=False
        ),
        "backward: weight-gradient GEMM": lambda: fused.weight_grad(d2, cols),
    }
    if need_dx:
        pieces["backward: input gradient (9 GEMMs + col2im adds)"] = lambda: fused.add_data_grad(
            d2, w, dxp, pooled, (p, q), (1, 1), (1, 1), np.empty_like(d2), part
        )
    name = f"Conv2d({c}, {c_out})"
    return [[f"{name} {piece}", f"{chunks * _median_ms(fn):.2f}"] for piece, fn in pieces.items()]


def layouts() -> None:
    """The second convolution's im2col copy + forward GEMM, from channels-first and
    from channels-last memory: the measurement behind the channels-last kernels."""
    rng = np.random.default_rng(0)
    set_blas_threads(1)
    b, c, hw, k, c_out = ARGS.batch_size, 32, 13, 3, 64
    o = hw - k + 1
    w = rng.standard_normal((c_out, c, k, k), dtype=np.float32)
    x_nchw = rng.standard_normal((b, c, hw, hw), dtype=np.float32)
    x_nhwc = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    view = np.lib.stride_tricks.sliding_window_view

    def nchw() -> np.ndarray:
        # windows (N, C, OH, OW, KH, KW) -> rows (N*OH*OW, C*KH*KW): runs of 3 floats
        win = view(x_nchw, (k, k), axis=(2, 3))
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(b * o * o, c * k * k)
        out = cols @ w.reshape(c_out, -1).T  # (N*OH*OW, C_out)
        return out.reshape(b, o, o, c_out).transpose(0, 3, 1, 2).copy()  # back to NCHW memory

    def nchw_colsT() -> np.ndarray:
        # rows (C*KH*KW, N*OH*OW): runs of OW floats; the product lands channels-first
        win = view(x_nchw, (k, k), axis=(2, 3))  # (N, C, OH, OW, KH, KW)
        cols = win.transpose(1, 4, 5, 0, 2, 3).reshape(c * k * k, b * o * o)
        out = w.reshape(c_out, -1) @ cols  # (C_out, N*OH*OW)
        return out.reshape(c_out, b, o, o).transpose(1, 0, 2, 3).copy()

    def nhwc() -> np.ndarray:
        # windows (N, OH, OW, KH, KW, C) -> rows (N*OH*OW, KH*KW*C): runs of 3*C floats
        win = view(x_nhwc, (k, k), axis=(1, 2))  # (N, OH, OW, C, KH, KW)
        cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(b * o * o, k * k * c)
        return cols @ w.transpose(0, 2, 3, 1).reshape(c_out, -1).T  # already NHWC

    rows = [
        ["NCHW memory, patch rows (C, KH, KW)", f"{_median_ms(nchw):.2f}"],
        ["NCHW memory, patch columns", f"{_median_ms(nchw_colsT):.2f}"],
        ["NHWC memory, patch rows (KH, KW, C)", f"{_median_ms(nhwc):.2f}"],
    ]
    print(f"Conv2d(32, 64, 3) on ({b}, 32, 13, 13): im2col + GEMM, one thread; {versions()}")
    print_table(["layout", "ms (median of 15)"], rows, ARGS.markdown)


def chunk_sizes() -> None:
    """A LeNet training step with the batch split into chunks of different sizes."""
    x, y, _, _ = _data()
    rows = []
    for size in (8, 16, 32, 64, 128):
        _parallel.CHUNK = size
        _handgrad_threads()
        model = lenet(np.random.default_rng(0))
        loss = nn.CrossEntropyLoss()
        opt = optim.Adam(model.parameters(), lr=LR)
        xb, yb = x[: ARGS.batch_size], y[: ARGS.batch_size]

        def step() -> None:
            loss.forward(model.forward(xb), yb)  # noqa: B023
            opt.zero_grad()  # noqa: B023
            model.backward_params(loss.backward())  # noqa: B023
            opt.step()  # noqa: B023

        rows.append([str(size), f"{_median_ms(step, 30):.2f}"])
    print(f"LeNet training step, batch {ARGS.batch_size}, {ARGS.threads} thread(s)")
    print_table(["images per chunk", "ms per step (median of 30)"], rows, ARGS.markdown)


def serve_worker(name: str) -> int:
    """Run in a worker process: build contender ``name`` and serve its epochs."""
    x, y, xt, yt = _data()
    try:
        run, predict_fn = CONTENDERS[name](x, y)
    except ImportError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        print(PROTOCOL + "skip", flush=True)
        return 0

    def inference() -> tuple[float, ...]:
        assert predict_fn is not None
        accuracy = float(np.mean(predict_fn(xt) == yt))
        secs = _median_ms(lambda: predict_fn(xt), 3) / 1e3
        return accuracy, len(xt) / secs, len(xt)

    return serve(run, None if predict_fn is None else inference)


def main() -> int:
    if ARGS.worker:
        return serve_worker(ARGS.worker)
    if ARGS.profile:
        profile()
        return 0
    if ARGS.layouts:
        layouts()
        return 0
    if ARGS.chunks:
        chunk_sizes()
        return 0
    workers = start_workers(__file__, list(CONTENDERS))
    try:
        times = alternate({name: w.epoch for name, w in workers.items()}, ARGS.rounds)
        answers = {name: w.ask("predict") for name, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    base = statistics.median(times["handgrad"])
    rows, infer_rows, n_test = [], [], 0.0
    for name, ts in times.items():
        if answers[name] == "none":
            rows.append([*timing_row(name, ts, base), "-"])
            continue
        accuracy, speed, n_test = map(float, answers[name].split())
        rows.append([*timing_row(name, ts, base), f"{accuracy:.2%}"])
        infer_rows.append([name, f"{speed:,.0f} images/s"])
    n_train = min(ARGS.train_size, 60000)
    print(
        f"LeNet (conv 32 3x3, pool, conv 64 3x3, pool, fc 128, fc 10), Adam {LR:g}, batch "
        f"{ARGS.batch_size}, {n_train:,} images, {ARGS.rounds} epochs each, {ARGS.threads} "
        f"thread(s), contenders alternating, each in its own process; {worker_versions()}"
    )
    print(f"Hardware: {hardware()}")
    print_table(TIMING_HEAD, rows, ARGS.markdown)
    print(f"\nInference on the {n_test:,.0f} test images in batches of {EVAL_BATCH}:")
    print_table(["contender", "throughput"], infer_rows, ARGS.markdown)
    return 0


def worker_versions() -> str:
    """:func:`versions` with torch's version, which only the workers import."""
    import importlib.metadata

    try:
        return f"{versions()}, torch {importlib.metadata.version('torch')}"
    except importlib.metadata.PackageNotFoundError:
        return versions()


if __name__ == "__main__":
    sys.exit(main())
