"""``handgrad study kernels``: hand-made kernels in ``nn.Conv2d`` and 2x2 ``nn.MaxPool2d``
match the loop reference, answer the probe images as their sums and orientations
say, and a briefly trained LeNet's first-layer filters are drawn and compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handgrad.studies import Report
from handgrad.studies.kernels import KERNELS, apply_kernels, best_cosines, max_pool
from tests._studies import one_blas_thread, run_command  # noqa: F401

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, str, Path]:
    out = tmp_path_factory.mktemp("kernels")
    report, printed = run_command("kernels", out)
    return report, printed, out


def test_command_writes_the_course_figure_and_the_filters(run: tuple[Report, str, Path]) -> None:
    report, printed, out = run
    assert report.text() in printed
    for name in ("kernels.png", "learned_filters.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "| kernel | weights (rows) | sum | flat |" in (out / "report.md").read_text()


def test_conv_and_pool_match_the_loops(run: tuple[Report, str, Path]) -> None:
    numbers = run[0].numbers
    assert numbers["conv_error"] < 1e-12
    assert numbers["pool_error"] == 0.0  # a max picks a value, it computes nothing
    assert numbers["pooled_shape"] == (14, 14)
    assert numbers["pooled_max"] == numbers["digit_max"]


def test_probe_responses_follow_sums_and_orientation(run: tuple[Report, str, Path]) -> None:
    r = run[0].numbers["responses"]
    for name in ("edge detect", "horizontal edges", "vertical edges"):
        assert r[name]["flat"] == pytest.approx(0.0, abs=1e-12), name
    for name in ("blur", "sharpen"):
        assert r[name]["flat"] == pytest.approx(1.0), name
    assert r["horizontal edges"]["horizontal line"] == pytest.approx(4.0)
    assert r["horizontal edges"]["vertical line"] == pytest.approx(0.0, abs=1e-12)
    assert r["vertical edges"]["vertical line"] == pytest.approx(4.0)
    assert r["vertical edges"]["horizontal line"] == pytest.approx(0.0, abs=1e-12)
    assert r["edge detect"]["horizontal line"] == r["edge detect"]["vertical line"] == 6.0


def test_the_cnn_learned_and_its_filters_are_compared(run: tuple[Report, str, Path]) -> None:
    numbers = run[0].numbers
    assert numbers["cnn_accuracy"] > 0.5  # 15 Adam steps; chance is 0.1
    assert numbers["filters_moved"] > 0.01
    for cosines in (numbers["cos_before"], numbers["cos_after"]):
        assert set(cosines) == set(KERNELS) - {"blur"}
        assert all(0 < c <= 1 + 1e-12 for c in cosines.values())


def test_kernels_on_a_known_image() -> None:
    image = np.zeros((6, 6))
    image[:, 3:] = 1.0  # a vertical edge between columns 2 and 3
    maps, error = apply_kernels(image, KERNELS)
    assert error < 1e-12
    names = list(KERNELS)
    vertical, horizontal = (
        maps[names.index("vertical edges")],
        maps[names.index("horizontal edges")],
    )
    np.testing.assert_allclose(vertical[1:-1, 2:4], 4.0)  # both sides of the edge
    np.testing.assert_allclose(horizontal[1:-1], 0.0, atol=1e-12)  # nothing changes down
    pooled, _ = max_pool(image)
    np.testing.assert_array_equal(pooled, [[0, 1, 1]] * 3)
    # a filter equal to a kernel is its own nearest filter
    assert best_cosines(np.stack([KERNELS["vertical edges"]]), {"v": KERNELS["vertical edges"]})[
        "v"
    ] == pytest.approx(1.0)
