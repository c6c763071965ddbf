from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from handgrad.data import load_mnist, write_idx

# Tolerances for comparing with PyTorch, per dtype. float64 differences come only
# from summation order; float32 from that plus single-precision rounding.
TOLERANCES: dict[type, dict[str, float]] = {
    np.float64: {"rtol": 1e-9, "atol": 1e-11},
    np.float32: {"rtol": 2e-5, "atol": 2e-6},
}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block with the process umask set to ``mask``."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="session")
def small_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 training and 500 test images of the real MNIST, in an MNIST-format directory."""
    d = load_mnist()
    out = tmp_path_factory.mktemp("mnist-slice")
    write_idx(out / "train-images-idx3-ubyte.gz", d.x_train[:3000])
    write_idx(out / "train-labels-idx1-ubyte.gz", d.y_train[:3000].astype(np.uint8))
    write_idx(out / "t10k-images-idx3-ubyte", d.x_test[:500])  # uncompressed works too
    write_idx(out / "t10k-labels-idx1-ubyte", d.y_test[:500].astype(np.uint8))
    return out


@pytest.fixture(autouse=True)
def _thread_choices_stay_in_their_test() -> Iterator[None]:
    """``handgrad.set_blas_threads`` / ``set_num_threads`` mark the counts as the user's
    choice, which ``fit`` and the command line then keep: one test's call must not
    change the defaults another test sees."""
    from handgrad import _threads

    before = dict(_threads._chosen)
    yield
    _threads._chosen.update(before)


# -- lab submissions -------------------------------------------------------------------


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory the submission may write to: where the grader runs as root, the child
    runs as a user id of its own, for which pytest's 0700 ``tmp_path`` is out of reach."""
    path = Path(tempfile.mkdtemp(prefix="handgrad-lab-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_submission(tmp_path: Path, source: str) -> Path:
    """``source`` (dedented) as ``tmp_path/submission.py``."""
    path = tmp_path / "submission.py"
    path.write_text(textwrap.dedent(source))
    return path
