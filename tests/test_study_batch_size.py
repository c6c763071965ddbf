"""The batch-size study: at the same number of samples seen, tiny batches are slow per
epoch, huge ones take too few steps to learn, and a batch's loss spreads like
sigma / sqrt(B)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest

from handgrad.studies import Report
from handgrad.studies.batch_size import curve_noise, sampling_noise
from tests._studies import one_blas_thread, run_command  # noqa: F401

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Report, str]]:
    """One quick run through the command line; the report it printed is kept."""
    out = tmp_path_factory.mktemp("batch")
    report, _ = run_command("batch-size", out)
    for name in ("batch_size", "batch_loss_curves"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![batch_size](batch_size.png)" in (out / "report.md").read_text()
    yield report, report.text()


def test_same_samples_seen_for_every_batch_size(study: tuple[Report, str]) -> None:
    report = study[0]
    runs, samples = report.numbers["runs"], report.numbers["samples"]
    assert sorted(runs) == [1, 8, 64, 256]
    epochs = samples // runs[1].steps
    for b, run in runs.items():
        assert run.steps == epochs * math.ceil(samples / epochs / b), b
    assert "batch size  steps  test acc" in study[1]


def test_small_batches_are_slow_and_huge_ones_learn_little(study: tuple[Report, str]) -> None:
    runs = study[0].numbers["runs"]
    assert runs[1].seconds_per_epoch > 5 * runs[64].seconds_per_epoch  # per-step overhead
    assert runs[256].test_accuracy < runs[8].test_accuracy - 0.1  # 8 steps are too few
    assert runs[8].test_accuracy > 0.7


def test_noise_shrinks_with_the_batch(study: tuple[Report, str]) -> None:
    runs, sampled = study[0].numbers["runs"], study[0].numbers["sampled"]
    assert runs[1].noise > 3 * runs[64].noise
    spreads = [sampled[b][0] for b in sorted(sampled)]
    assert all(a > b for a, b in itertools.pairwise(spreads))
    for b, (measured, predicted) in sampled.items():
        assert measured == pytest.approx(predicted, rel=0.3), b  # sigma / sqrt(B)


def test_noise_measures() -> None:
    rng = np.random.default_rng(0)
    trend = np.linspace(2.0, 0.5, 2000)
    noisy = trend + 0.3 * rng.standard_normal(2000)
    assert curve_noise(list(noisy)) == pytest.approx(0.3, rel=0.1)  # the trend is removed
    assert math.isnan(curve_noise([1.0, 0.5, 0.2, 0.1]))  # two points in the second half
    losses = rng.exponential(size=5000)
    measured, predicted = sampling_noise(losses, 100, 2000, rng)
    assert predicted == pytest.approx(losses.std() / 10 * math.sqrt(4900 / 4999))
    assert measured == pytest.approx(predicted, rel=0.1)
    measured, predicted = sampling_noise(losses, 5000, 10, rng)
    assert measured < 1e-12 and predicted == 0  # the whole set: no noise
