"""Threads: one setting for the two kinds handgrad computes on.

A network's time goes to one of two places, and each has its own threads:

- **An MLP** spends it in matrix products, which NumPy hands to its BLAS library
  (OpenBLAS in NumPy's wheels). Its threads: :func:`set_blas_threads`.
- **A convolutional network** spends it in handgrad's own batch-parallel kernels
  (:mod:`handgrad._parallel`): each thread takes chunks of the batch and calls BLAS
  on one thread, so the two kinds never fight over the cores. Its threads:
  :func:`set_num_threads`.

:func:`threads` sets both for a model at once, as a context manager, and
:func:`handgrad.train.fit` applies the same rule for its own run through its
``threads=`` argument. Left to :func:`plan` (``threads=None``), a run
gets what the command line gives it, measured on the 2-core machine and written
in the README ("Threads"): an MLP one BLAS thread (a second one saves about a
tenth of the time on an idle machine and costs several times the time when
another process wants a core); a convolutional network a handgrad thread per
core, BLAS on one. Threads you chose yourself win over that default: an
``OPENBLAS_NUM_THREADS`` or ``OMP_NUM_THREADS`` in the environment, or a call to
``handgrad.set_blas_threads``, keeps an MLP's BLAS threads; a call to
``handgrad.set_num_threads`` keeps a convolutional network's own threads.

>>> import handgrad
>>> from handgrad import nn
>>> mlp = nn.Sequential(nn.Linear(4, 3, rng=0))
>>> with handgrad.threads(1, mlp):
...     (handgrad.get_num_threads(), handgrad.get_blas_threads() in (1, None))
(1, True)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from handgrad import _blas, _parallel

#: Environment variables that set BLAS's threads before NumPy loads.
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_chosen = {"blas": False, "pool": False}  # set by the user, through this module


def get_blas_threads() -> int | None:
    """How many threads NumPy's BLAS uses, or None where it cannot be told."""
    return _blas.blas_threads()


def set_blas_threads(n: int) -> bool:
    """Use ``n`` BLAS threads from now on (and keep them: ``fit`` no longer picks).

    Returns False where NumPy's BLAS cannot be told (not OpenBLAS, or not found).
    """
    done = _blas.set_blas_threads(n)
    _chosen["blas"] = True
    return done


def get_num_threads() -> int:
    """Threads handgrad's batch-parallel kernels use."""
    return _parallel.get_num_threads()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in handgrad's own kernels (and keep them: ``fit`` no longer picks)."""
    _parallel.set_num_threads(n)
    _chosen["pool"] = True


def is_convolutional(model: Any) -> bool:
    """True when ``model`` holds a layer that computes on handgrad's own threads."""
    from handgrad.nn.conv import Conv2d
    from handgrad.nn.pooling import _Pool2d

    modules = model.modules() if hasattr(model, "modules") else ()
    return any(isinstance(m, (Conv2d, _Pool2d)) for m in modules)


def plan(
    n: int | None, convolutional: bool, keep_chosen: bool = True
) -> tuple[int | None, int | None]:
    """``(BLAS threads, handgrad threads)`` for a run; None: leave that one as it is.

    ``n`` given: a convolutional network gets ``n`` handgrad threads and one BLAS
    thread, an MLP ``n`` BLAS threads and one handgrad thread. ``n`` None: the
    default of the module doc, which keeps threads the user chose (the environment's
    always; with ``keep_chosen``, those set through this module's setters too: the
    command line documents its default by the environment alone).
    """
    if n is not None:
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"threads must be a positive int or None, got {n!r}")
        n = int(n)
        return (1, n) if convolutional else (n, 1)
    if convolutional:  # BLAS on one thread inside each of handgrad's, always
        return 1, (None if keep_chosen and _chosen["pool"] else _parallel.available_cpus())
    blas_chosen = (keep_chosen and _chosen["blas"]) or any(os.environ.get(v) for v in BLAS_ENV)
    return (None if blas_chosen else 1), None


@contextlib.contextmanager
def threads(n: int | None = None, model: Any = None) -> Iterator[tuple[int | None, int]]:
    """Within the block, compute on ``n`` threads as :func:`plan` splits them for
    ``model`` (an MLP when None), ``fit`` included (its default gives way to them);
    the counts before come back after it. Yields ``(BLAS threads or None, handgrad
    threads)`` as set."""
    conv = model is not None and is_convolutional(model)
    chosen = dict(_chosen)
    with _applied(plan(n, conv)) as now:
        # the kind of threads this block chose is the user's choice: fit keeps it (an
        # MLP's BLAS threads, or a convolutional network's own)
        _chosen.update(
            blas=chosen["blas"] or (n is not None and not conv),
            pool=chosen["pool"] or (n is not None and conv),
        )
        try:
            yield now
        finally:
            _chosen.update(chosen)


@contextlib.contextmanager
def _applied(counts: tuple[int | None, int | None]) -> Iterator[tuple[int | None, int]]:
    """Set ``(BLAS, handgrad)`` thread counts (None: leave it), restore them after,
    without marking them as the user's choice."""
    before = (_blas.blas_threads(), _parallel.get_num_threads())
    blas, pool = (None if n == now else n for n, now in zip(counts, before, strict=True))
    try:
        if blas is not None:
            _blas.set_blas_threads(blas)
        if pool is not None:
            _parallel.set_num_threads(pool)
        yield _blas.blas_threads(), _parallel.get_num_threads()
    finally:  # only what this block changed goes back
        if blas is not None and before[0] is not None:
            _blas.set_blas_threads(before[0])
        if pool is not None:
            _parallel.set_num_threads(before[1])


def for_run(model: Any, n: int | None) -> contextlib.AbstractContextManager[Any]:
    """The threads of one training run (``fit``'s ``threads=``), restored after it."""
    return _applied(plan(n, is_convolutional(model)))
