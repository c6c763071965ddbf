"""Batch-parallel kernels: split a batch into fixed chunks of images, run them on threads.

NumPy runs one operation on one core, and BLAS threads only help the matrix
products, so the convolution, pooling and ReLU kernels split their batch into
chunks of :data:`CHUNK` images and hand the chunks to a small thread pool (NumPy
and BLAS release the GIL while they work). Three things follow from the design:

- The chunks do not depend on the thread count, and every sum over the batch
  (a weight gradient) adds the chunks' partial sums in chunk order, so the
  results are the same, bit for bit, on 1 thread or on 8.
- Each chunk is small enough for its im2col rows to stay in cache between the
  copy that makes them and the product that reads them.
- BLAS should run one thread per call while the pool runs several (the command
  line sets it so), or the two kinds of threads fight over the cores.

``set_num_threads(n)`` sets the pool's size (1 by default: no threads at all).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import numpy as np

T = TypeVar("T")

CHUNK = 32  # images per task: chosen by benchmarks/bench_cnn.py --chunks (see docs/cnn.md)

_lock = threading.Lock()
_threads = 1
_pool: ThreadPoolExecutor | None = None


def get_num_threads() -> int:
    """Threads the batch-parallel kernels use."""
    return _threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in the batch-parallel kernels (1: run everything inline)."""
    global _threads, _pool
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the number of threads must be a positive int, got {n!r}")
    with _lock:
        if n != _threads and _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
        _threads = int(n)


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def chunks(n: int, size: int | None = None) -> list[tuple[int, int]]:
    """``[(lo, hi), ...]`` covering ``range(n)`` in pieces of ``size`` (default
    :data:`CHUNK`; the last piece may be shorter)."""
    step = CHUNK if size is None else size
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def map_chunks(fn: Callable[[int, int], T], n: int, size: int | None = None) -> list[T]:
    """``[fn(lo, hi) for each chunk]``, in chunk order, on the pool's threads.

    The chunks are dealt out in ``threads`` contiguous runs, one run per thread,
    with the calling thread taking the first: one hand-off per thread and kernel
    call, not one per chunk (a hand-off costs tens of microseconds). ``fn`` must
    only write to its own chunk of any shared output. An exception in any chunk
    is raised here, after every run has finished.
    """
    global _pool
    bounds = chunks(n, size)
    runs = min(_threads, len(bounds))
    if runs <= 1:
        return [fn(lo, hi) for lo, hi in bounds]
    cuts = [len(bounds) * r // runs for r in range(runs + 1)]
    groups = [bounds[cuts[r] : cuts[r + 1]] for r in range(runs)]

    def run(group: list[tuple[int, int]]) -> list[T]:
        return [fn(lo, hi) for lo, hi in group]

    with _lock:  # submitted under the lock: set_num_threads cannot shut the pool in between
        if _pool is None:
            _pool = ThreadPoolExecutor(_threads - 1, thread_name_prefix="handgrad")
        futures = [_pool.submit(run, group) for group in groups[1:]]
    try:
        results = run(groups[0])
    finally:
        wait(futures)
    for future in futures:
        results.extend(future.result())
    return results


def elementwise(fn: Callable[..., object], *arrays: np.ndarray) -> np.ndarray:
    """``fn(*arrays, out=out)`` for an elementwise ``fn`` over same-shape arrays, split
    along the first axis over the pool's threads when there are several and the
    batch is large. ``out`` has the first array's memory layout."""
    first = arrays[0]
    out = np.empty_like(first)
    if _threads == 1 or first.ndim == 0 or first.shape[0] <= CHUNK or first.size < 1 << 18:
        fn(*arrays, out=out)
        return out

    def chunk(lo: int, hi: int) -> None:
        fn(*(a[lo:hi] for a in arrays), out=out[lo:hi])

    map_chunks(chunk, first.shape[0])
    return out


Scratch = dict[object, np.ndarray]


def scratch(
    store: Scratch | None, key: object, shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    """An uninitialised array from ``store`` under ``key``, kept for the next call with
    the same key (a fresh one when shape or dtype differ, or with no ``store``).

    Big arrays made fresh on every training step cost page faults: glibc gives
    memory above its mmap threshold back to the kernel when it is freed, and the
    kernel zeroes every page again on first touch. On LeNet's full 60,000-image
    epoch that was ~5,400 faults and ~14 ms of system time per step (measured with
    ``getrusage``); reused buffers take none. Keys must be private to one thread
    (a chunk index, or the thread's id) and the array must not escape to a caller.
    """
    if store is None:
        return np.empty(shape, dtype)
    buf = store.get(key)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = store[key] = np.empty(shape, dtype)
    return buf
