"""``handgrad study learning-rate``: the range test finds a divergence point, the sweep
marks the divergent rates without crashing, gradient descent on the quadratic
diverges exactly above ``2 / b``, and the same seed gives the same table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handgrad.studies import Context, Report, run_study
from handgrad.studies.learning_rate import SweepRun, contraction, descend, guessing_loss
from tests._studies import one_blas_thread, run_command  # noqa: F401

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, str, Path]:
    """One quick run through the command line, keeping the report it printed."""
    out = tmp_path_factory.mktemp("lr")
    report, printed = run_command("learning-rate", out)
    return report, printed, out


def test_command_writes_table_and_figures(run: tuple[Report, str, Path]) -> None:
    report, printed, out = run
    assert report.text() in printed
    assert "diverged: a batch's loss hit " in printed
    for name in ("lr_range_test.png", "lr_surface.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "| lr | highest batch loss | final loss |" in (out / "report.md").read_text()


def test_range_test_finds_where_the_loss_falls_and_where_it_diverges(
    run: tuple[Report, str, Path],
) -> None:
    test = run[0].numbers["range_test"]
    assert test.diverged_lr is not None and test.reason == "loss above 4x its minimum"
    assert len(test.losses) < run[0].numbers["n_range"] / 64  # stopped before the epoch ended
    assert 1e-2 < test.best_lr < test.diverged_lr < 100
    assert test.suggested_lr == pytest.approx(test.best_lr / 10)
    assert test.smoothed.min() < 0.9 * test.losses[0]  # it learned before it diverged
    assert test.smoothed[-1] > 4 * test.smoothed.min()


def test_sweep_marks_the_divergent_rates(run: tuple[Report, str, Path]) -> None:
    sweep = run[0].numbers["sweep"]
    assert [lr for lr, r in sweep.items() if r.diverged] == [3.0, 10.0]
    for lr in (3.0, 10.0):
        assert sweep[lr].peak > 4 * sweep[lr].start_loss
        assert sweep[lr].accuracy < 0.3  # about chance: the network is wrecked
    ok = {lr: r.epoch_losses[-1] for lr, r in sweep.items() if not r.diverged}
    best = min(ok, key=ok.__getitem__)
    assert 0.03 <= best <= 1.0
    assert ok[1e-3] > 2 * ok[best]  # too small: barely moved in the same budget
    assert sweep[1e-3].peak < 1.2 * sweep[1e-3].start_loss  # and never blew up
    # the range test's divergence point is within a factor of 10 of the sweep's
    ratio = 3.0 / run[0].numbers["range_test"].diverged_lr
    assert 0.1 < ratio < 10


def _run(lr: float, epochs: list[float], batches: list[float], stop: str | None = None) -> SweepRun:
    return SweepRun(lr, 2.37, 2.30, epochs, batches, 0.5, stop)


def test_a_blow_up_that_settles_at_guessing_still_counts_as_divergence() -> None:
    # lr 3 on the full run: a batch's loss hits 62, ReLUs die, and the loss settles at
    # 2.34, below the start of 2.37 but no better than guessing: finite, still a failure
    assert _run(3.0, [2.5, 2.34], [2.37, 9.2, 62.3, 2.3]).diverged
    # lr 1 spikes to 12.7 and recovers to 0.36: not diverged
    assert not _run(1.0, [0.6, 0.36], [2.37, 12.7, 0.4]).diverged
    # no blow-up, no learning yet: too slow, not diverged
    assert not _run(1e-3, [2.35], [2.37, 2.49, 2.3]).diverged
    assert _run(0.1, [2.5], [2.37, 2.6]).diverged  # ended above the start
    nan = _run(10.0, [], [2.37], "non-finite loss (nan) at epoch 1, batch 2: stopped")
    assert nan.diverged and nan.non_finite
    assert guessing_loss(np.array([0, 1, 2, 3])) == pytest.approx(np.log(4))


def test_quadratic_diverges_exactly_above_two_over_b(run: tuple[Report, str, Path]) -> None:
    descents = run[0].numbers["descents"]
    assert descents["too large"].diverged_at is not None
    assert descents["small"].converged_at is None and descents["small"].diverged_at is None
    assert descents["best"].converged_at < descents["near the limit"].converged_at
    curvatures = (1.0, 10.0)
    assert descend(0.199, curvatures, (-4.0, 1.5), 5000).converged_at is not None
    assert descend(0.201, curvatures, (-4.0, 1.5), 5000).diverged_at is not None
    assert contraction(0.2, curvatures) == pytest.approx(1.0)
    path = descend(2 / 11, curvatures, (-4.0, 1.5), 3).path
    np.testing.assert_allclose(path[1], [-4.0 * (1 - 2 / 11), 1.5 * (1 - 20 / 11)])


def test_same_seed_same_table(run: tuple[Report, str, Path], tmp_path: Path) -> None:
    again = run_study("learning-rate", Context(seed=0, quick=True, out=tmp_path))
    assert again.text() == run[0].text()
