"""``handgrad study course-mlp``: the course's network trains, momentum runs, and the
learning-rate sweep detects and reports the divergent rate instead of crashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from handgrad.cli import main
from handgrad.studies import Context, run_study
from handgrad.studies.course_mlp import Run
from handgrad.train import History
from tests._studies import one_blas_thread, run_command  # noqa: F401

pytest.importorskip("matplotlib")


def test_course_mlp_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "course-mlp", "--quick", "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "diverged: non-finite loss" in out
    assert (tmp_path / "cli" / "course_mlp.png").read_bytes()[:4] == b"\x89PNG"

    report = run_study("course-mlp", Context(seed=0, quick=True, out=tmp_path / "run"))
    acc, loss = report.numbers["test_accuracy"], report.numbers["final_loss"]
    diverged = report.numbers["diverged"]
    assert 10.0 in diverged and not {0.001, 0.01, 0.1} & set(diverged)
    assert report.numbers["epochs_run"]["SGD lr 10"] == 1  # NaN: stopped in its first epoch
    assert "10   " in out and "diverged: non-finite loss (nan) at epoch 1, batch " in out
    for lr in ("0.001", "0.01", "0.1", "1"):  # the course's four all ran to the end
        assert report.numbers["epochs_run"][f"SGD lr {lr}"] == 5
    assert acc["SGD lr 0.1"] > 0.85 and acc["SGD lr 0.1, momentum 0.9"] > 0.85
    # too small a rate: still far from trained after the same epochs
    assert loss["SGD lr 0.001"] > 1.0 > 0.5 > loss["SGD lr 0.1"]
    assert acc["SGD lr 0.1"] > acc["SGD lr 0.01"] > acc["SGD lr 0.001"]
    # 3,000 images and 5 epochs say nothing of the course's 95% after 10 epochs on 60,000
    promise = next(f for f in report.findings if f.startswith("Plain SGD reaches"))
    assert "does not meet" not in promise and "does not test the course's promise" in promise


def test_run_status() -> None:
    ok = History({"loss": [0.5, 0.3], "val_accuracy": [0.9, 0.95]})
    assert Run(ok, [2.3, 0.4]).status() == "trained" and Run(ok, []).test_accuracy == 0.95
    stuck = History({"loss": [2.4, 2.35]})
    assert Run(stuck, [2.4, 2.35]).status() == "failed: loss no better than chance"
    nan = History(
        {}, "non-finite loss (nan) at epoch 1, batch 3: stopped; the weights are restored"
    )
    assert Run(nan, [2.3, 50.0]).diverged
    assert Run(nan, [2.3, 50.0]).status() == "diverged: non-finite loss (nan) at epoch 1, batch 3"
    # no NaN, but one batch's loss blew up to three times a uniform guess's (ln 10)
    spike = Run(History({"loss": [5.0, 1.9]}), [2.3, 7.0, 3.0, 1.8])
    assert spike.diverged and not spike.failed
    assert spike.status() == "diverged: a batch loss of 7, ends at 1.9"
    assert not Run(History({"loss": [1.0]}), [2.3, 6.9, 1.0]).diverged  # 6.9 < 3 ln 10
