"""``handgrad study optimizers``: eight optimizers from the same start on the same
batches, each learning, the adaptive ones ahead of plain SGD, and momentum at the
matched step close to SGD."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from handgrad.studies import Report
from handgrad.studies.optimizers import OPTIMIZERS, smooth
from tests._studies import one_blas_thread, run_command  # noqa: F401

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, str, Path]:
    """One quick run through the command line, keeping the report it printed."""
    out = tmp_path_factory.mktemp("optimizers")
    report, printed = run_command("optimizers", out)
    return report, printed, out


def test_command_prints_the_table_and_writes_the_figure(run: tuple[Report, str, Path]) -> None:
    report, printed, out = run
    assert report.text() in printed
    for name in OPTIMIZERS:
        assert f"\n{name} " in printed
    assert (out / "optimizers.png").read_bytes()[:4] == b"\x89PNG"
    assert "| optimizer | lr |" in (out / "report.md").read_text()


def test_same_start_same_batches_and_every_optimizer_learns(run: tuple[Report, str, Path]) -> None:
    runs = run[0].numbers["runs"]
    assert list(runs) == list(OPTIMIZERS)
    first = {r.batch_losses[0] for r in runs.values()}
    assert len(first) == 1  # the same weights saw the same first batch
    for r in runs.values():
        assert not r.diverged and r.stop_reason is None, r.name
        assert all(math.isfinite(v) for v in r.batch_losses), r.name
        assert r.epoch_losses[-1] < 0.5 * r.batch_losses[0], r.name  # halved the loss at least
        assert r.test_accuracy > 0.75, r.name


def test_adaptive_methods_beat_plain_sgd_and_momentum_matches_it(
    run: tuple[Report, str, Path],
) -> None:
    runs = run[0].numbers["runs"]
    sgd = runs["SGD"].epoch_losses[-1]
    for name in ("RMSprop", "Adagrad", "Adam", "AdamW"):
        assert runs[name].epoch_losses[-1] < sgd, name
    # lr 0.01 with momentum 0.9 takes SGD's 0.1 step once the velocity has built up
    assert abs(runs["momentum"].epoch_losses[-1] / sgd - 1) < 0.3
    # Adam keeps two moving averages per weight: its update costs more than SGD's
    assert runs["Adam"].step_ms > runs["SGD"].step_ms


def test_smooth_is_a_trailing_mean() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_allclose(smooth(values, 2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(smooth(values, 1), values)
