"""The losses study: all four losses train MNIST; the hinge silences the samples past
its margin, focal loss concentrates the gradient on the hard samples and MSE spreads
it; the same seed gives the same table, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handgrad import nn
from handgrad.cli import main
from handgrad.studies import Context, Report, run_study
from handgrad.studies.losses import gradient_spread, one_hot
from tests._studies import one_blas_thread, run_command  # noqa: F401

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return run_study("losses", Context(seed=3, quick=True, out=tmp_path_factory.mktemp("l")))


def test_every_loss_trains(report: Report) -> None:
    runs = report.numbers["runs"]
    assert list(runs) == ["cross-entropy", "MSE on one-hot", "multiclass hinge", "focal (gamma 2)"]
    for name, run in runs.items():
        assert run.stop_reason is None, name
        assert run.accuracy[-1] > 0.8, name  # quick run: 5000 images, 2 epochs


def test_gradients_explain_the_behaviour(report: Report) -> None:
    runs = report.numbers["runs"]
    ce, mse = runs["cross-entropy"], runs["MSE on one-hot"]
    hinge, focal = runs["multiclass hinge"], runs["focal (gamma 2)"]
    assert hinge.zero_gradient > 0.3  # satisfied margins send nothing back
    assert ce.zero_gradient == mse.zero_gradient == focal.zero_gradient == 0
    assert focal.top_share > ce.top_share > mse.top_share  # focal focuses, MSE spreads


def test_gradient_spread_on_known_scores() -> None:
    scores = np.array([[5.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 3.0, 0.0], [2.0, 0.0, 0.0]])
    y = np.array([0, 0, 0, 0])
    zero, share = gradient_spread(nn.MultiMarginLoss(reduction="sum"), scores, y, top=0.25)
    assert zero == 0.5  # rows 0 and 3 lead by more than the margin 1
    # rows 1 and 2 both violate it for both other classes: the same gradient (-2/3, 1/3, 1/3),
    # however wrong row 2 is (p=1 hinge), so the top quarter (one row) carries half
    assert share == pytest.approx(0.5)
    zero, share = gradient_spread(nn.MSELoss(reduction="sum"), scores, one_hot(y, 3), top=1.0)
    assert (zero, share) == (0.0, 1.0)


def test_same_seed_same_table(report: Report, tmp_path: Path) -> None:
    again = run_study("losses", Context(seed=3, quick=True, out=tmp_path / "again"))
    assert again.text() == report.text()
    other = run_study("losses", Context(seed=4, quick=True, out=tmp_path / "other"))
    assert other.tables[0].text() != report.tables[0].text()


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "losses", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "multiclass hinge" in printed and "zero gradient" in printed
    assert (tmp_path / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![losses](losses.png)" in (tmp_path / "report.md").read_text()
