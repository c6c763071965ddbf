"""``handgrad study vectorization``: four versions of one Linear forward that agree
with ``nn.Linear``, and the order of their speeds (with wide margins: the machine
may be busy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handgrad.studies import Report
from handgrad.studies.vectorization import (
    forward_broadcast,
    forward_loops,
    forward_rows,
    linear_layer,
    median_seconds,
)
from tests._studies import one_blas_thread, run_command  # noqa: F401

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, str, Path]:
    out = tmp_path_factory.mktemp("vec")
    report, printed = run_command("vectorization", out)
    return report, printed, out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_version_computes_the_linear_layer(dtype: type) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7)).astype(dtype)
    w = rng.standard_normal((3, 7)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    expected = linear_layer(w, b).forward(x)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for forward in (forward_loops, forward_rows, forward_broadcast):
        out = forward(x, w, b)
        assert out.shape == (5, 3) and out.dtype == dtype, forward.__name__
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol, err_msg=forward.__name__)


def test_median_seconds_is_per_call() -> None:
    calls = []
    seconds = median_seconds(lambda: calls.append(1), repeats=3, min_seconds=0.001)
    assert 0 < seconds < 1e-3
    assert len(calls) >= 4  # calibration, then three repeats of at least one call


def test_the_matrix_product_wins_by_orders_of_magnitude(run: tuple[Report, str, Path]) -> None:
    report, printed, out = run
    assert report.text() in printed
    assert (out / "vectorization.png").read_bytes()[:4] == b"\x89PNG"
    results = report.numbers["results"]
    assert [r["batch"] for r in results] == [1, 16]
    assert report.numbers["max_error"] < 1e-4  # float32, sums of 784 products
    for r in results:
        # hundreds of times on any machine; 30x leaves room for a busy one
        assert r["loops"] > 30 * r["matmul"], r
        assert r["loops"] > 10 * r["broadcast"], r  # the interpreter's share alone
    big = results[-1]
    assert big["broadcast"] > big["matmul"]  # BLAS beats NumPy's elementwise loops
