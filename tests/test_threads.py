"""Threads as a public setting: ``handgrad.threads``, ``fit(threads=)``, and the library's
default, which is the command line's (one BLAS thread for an MLP)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import handgrad
from handgrad import _blas, _parallel, _threads
from handgrad.callbacks import Callback
from handgrad.nn import CrossEntropyLoss
from handgrad.optim import SGD
from handgrad.recipes import build_lenet, build_mlp
from handgrad.train import fit

pytestmark = pytest.mark.skipif(
    handgrad.get_blas_threads() is None, reason="NumPy's BLAS is not an OpenBLAS handgrad can set"
)


class Seen(Callback):
    """Records the thread counts in force while training runs."""

    def __init__(self) -> None:
        self.counts: list[tuple[int | None, int]] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        self.counts.append((_blas.blas_threads(), _parallel.get_num_threads()))


def _fit(model: Any, x: np.ndarray, **kwargs: Any) -> list[tuple[int | None, int]]:
    seen = Seen()
    y = np.arange(len(x)) % 10
    fit(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.01), (x, y), epochs=1,
        batch_size=16, rng=0, callbacks=[seen], **kwargs)  # fmt: skip
    return sorted(set(seen.counts))


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No thread count chosen by the environment or by an earlier call."""
    for var in _threads.BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(_threads._chosen, "blas", False)
    monkeypatch.setitem(_threads._chosen, "pool", False)


@pytest.fixture
def two_blas_threads() -> Any:
    """OpenBLAS as a script finds it on a 2-core machine: a thread per core."""
    before = (_blas.blas_threads(), _parallel.get_num_threads())
    _blas.set_blas_threads(2)
    _parallel.set_num_threads(1)
    yield
    if before[0] is not None:
        _blas.set_blas_threads(before[0])
    _parallel.set_num_threads(before[1])


def test_an_mlp_fits_on_one_blas_thread_by_default_and_gets_its_threads_back(
    no_env: None, two_blas_threads: None
) -> None:
    x = np.zeros((64, 784), np.float32)
    assert _fit(build_mlp(784, [8], 10, rng=0), x) == [(1, 1)]
    assert _blas.blas_threads() == 2  # restored
    assert _fit(build_mlp(784, [8], 10, rng=0), x, threads=2) == [(2, 1)]
    assert _blas.blas_threads() == 2


def test_a_cnn_fits_on_a_handgrad_thread_per_core_with_blas_on_one(
    no_env: None, two_blas_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_parallel, "available_cpus", lambda: 3)
    x = np.zeros((32, 1, 28, 28), np.float32)
    assert _fit(build_lenet((28, 28), 10, rng=0), x) == [(1, 3)]
    assert _fit(build_lenet((28, 28), 10, rng=0), x, threads=2) == [(1, 2)]
    assert (_blas.blas_threads(), _parallel.get_num_threads()) == (2, 1)


def test_threads_the_user_chose_are_kept(
    no_env: None, two_blas_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = np.zeros((64, 784), np.float32)
    handgrad.set_blas_threads(2)  # the user's choice: fit keeps it
    assert _fit(build_mlp(784, [8], 10, rng=0), x) == [(2, 1)]
    assert _fit(build_mlp(784, [8], 10, rng=0), x, threads=1) == [(1, 1)]  # asked: obeyed
    _threads._chosen["blas"] = False
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")  # the environment's choice too
    assert _fit(build_mlp(784, [8], 10, rng=0), x) == [(2, 1)]


def test_the_context_manager_sets_both_and_restores_them(
    no_env: None, two_blas_threads: None
) -> None:
    lenet, mlp = build_lenet((28, 28), 10, rng=0), build_mlp(4, [3], 2, rng=0)
    with handgrad.threads(3, lenet) as counts:
        assert counts == (1, 3) == (_blas.blas_threads(), _parallel.get_num_threads())
    with handgrad.threads(1, mlp) as counts:
        assert counts == (1, 1)
    with handgrad.threads(2) as counts:  # no model: an MLP's split
        assert counts == (2, 1)
    assert (_blas.blas_threads(), _parallel.get_num_threads()) == (2, 1)
    assert not _threads._chosen["blas"] and not _threads._chosen["pool"]


def test_fit_inside_the_context_manager_keeps_its_threads(
    no_env: None, two_blas_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``with handgrad.threads(1): fit(...)`` trains on one thread: fit's default (a
    handgrad thread per core for a CNN) once replaced the block's choice."""
    monkeypatch.setattr(_parallel, "available_cpus", lambda: 3)
    lenet = build_lenet((28, 28), 10, rng=0)
    with handgrad.threads(1, lenet):
        assert _fit(lenet, np.zeros((32, 1, 28, 28), np.float32)) == [(1, 1)]
    mlp = build_mlp(784, [8], 10, rng=0)
    with handgrad.threads(2, mlp):
        assert _fit(mlp, np.zeros((64, 784), np.float32)) == [(2, 1)]
    # a block without a model chose BLAS threads: a CNN in it still gets its own default
    with handgrad.threads(2):
        assert _fit(lenet, np.zeros((32, 1, 28, 28), np.float32)) == [(1, 3)]
    assert not _threads._chosen["blas"] and not _threads._chosen["pool"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="threads must be a positive int"):
        with handgrad.threads(bad):
            pass
    model = build_mlp(4, [3], 2, rng=0)
    with pytest.raises(ValueError, match="threads must be a positive int"):
        _fit(model, np.zeros((8, 4), np.float32), threads=bad)


@pytest.mark.parametrize(("given", "expected"), [([], 1), (["--threads", "2"], 2)])
def test_the_command_lines_threads_are_the_ones_training_runs_on(
    small_mnist: Any, no_env: None, two_blas_threads: None, monkeypatch: pytest.MonkeyPatch,
    given: list[str], expected: int,
) -> None:  # fmt: skip
    """``--threads 2`` must reach the training steps: fit's own default (one BLAS thread
    for an MLP) once replaced it, and ``handgrad train --threads 2`` trained on one."""
    from handgrad.callbacks import ProgressBar
    from handgrad.cli import main

    seen: set[int | None] = set()
    monkeypatch.setattr(
        ProgressBar, "on_train_batch_end", lambda self, b, logs: seen.add(_blas.blas_threads())
    )
    argv = ["train", "--data-dir", str(small_mnist), "--epochs", "1", "--no-save", "-q"]
    assert main([*argv, *given]) == 0
    assert seen == {expected}
    assert _blas.blas_threads() == 2 and not _threads._chosen["blas"]


def test_the_command_lines_default_is_the_environments_alone(
    small_mnist: Any, no_env: None, two_blas_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``handgrad train`` documents its default by the environment: a call to
    ``handgrad.set_blas_threads`` earlier in the process (a notebook, a test) does not
    change what the command runs on."""
    from handgrad.callbacks import ProgressBar
    from handgrad.cli import main

    handgrad.set_blas_threads(2)
    seen: set[int | None] = set()
    monkeypatch.setattr(
        ProgressBar, "on_train_batch_end", lambda self, b, logs: seen.add(_blas.blas_threads())
    )
    argv = ["train", "--data-dir", str(small_mnist), "--epochs", "1", "--no-save", "-q"]
    assert main(argv) == 0
    assert seen == {1} and _blas.blas_threads() == 2
