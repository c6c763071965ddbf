"""The init-scale study: He keeps the signal, dividing by the He factor blows it up by
about n/2 per layer, 0.01 shrinks it to nothing, zero and constant weights leave every
hidden unit identical."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from handgrad.cli import main
from handgrad.studies import Context, Report, run_study
from handgrad.studies.init_scale import he, he_divided, layer_rms, relu_mlp
from tests._studies import one_blas_thread  # noqa: F401

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return run_study("init-scale", Context(quick=True, out=tmp_path_factory.mktemp("init")))


def test_he_keeps_the_signal_and_trains(report: Report) -> None:
    he_run = report.numbers["runs"]["He"]
    assert 0.8 < report.numbers["factors"]["He"] < 1.25
    assert he_run.test_accuracy > 0.7
    assert he_run.distinct == he_run.width  # every unit its own


def test_dividing_by_the_he_factor_explodes(report: Report) -> None:
    runs, width = report.numbers["runs"], report.numbers["width"]
    div = runs["He divided"]
    acts = div.act_rms[0]
    assert all(b > 20 * a for a, b in itertools.pairwise(acts))  # grows every layer
    assert 0.5 * width / 2 < report.numbers["factors"]["He divided"] < 2 * width / 2  # ~ n/2
    assert div.grad_rms[0][0] > 1e6 * runs["He"].grad_rms[0][0]
    assert div.test_accuracy < 0.3
    row = next(r for r in report.tables[0].rows if r[0] == "He divided")
    assert (div.stop_reason or "").startswith("non-finite") == row[3].startswith("diverged")


def test_too_small_vanishes(report: Report) -> None:
    runs = report.numbers["runs"]
    small = runs["too small"]
    assert report.numbers["factors"]["too small"] < 0.2  # 0.01 * sqrt(256 / 2) = 0.11
    assert small.act_rms[0][-1] < 1e-4 * runs["He"].act_rms[0][-1]
    assert small.grad_rms[0][0] < 1e-4 * runs["He"].grad_rms[0][0]
    assert small.test_accuracy < runs["He"].test_accuracy - 0.3


def test_zero_and_constant_weights_keep_units_identical(report: Report) -> None:
    runs = report.numbers["runs"]
    zero, const = runs["zero"], runs["constant"]
    assert zero.distinct == 1 and const.distinct == 1  # still one unit after training
    assert all(a == 0 for a in zero.act_rms[1])  # dead: every hidden output is zero
    assert zero.test_accuracy <= report.numbers["majority"] + 1e-12  # a constant prediction
    assert const.act_rms[0][-1] > 0.05  # alive, the right size, and still symmetric


def test_the_variance_algebra_on_a_random_batch() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((200, 784)).astype(np.float32)
    y = rng.integers(0, 10, 200)
    from handgrad import nn

    good, _ = layer_rms(relu_mlp(he, 4, 256, rng), nn.CrossEntropyLoss(), x, y)
    bad, _ = layer_rms(relu_mlp(he_divided, 4, 256, rng), nn.CrossEntropyLoss(), x, y)
    assert max(good) / min(good) < 2
    for a, b in itertools.pairwise(bad):
        assert 64 < b / a < 256  # sqrt(n std^2 / 2) = n / 2 = 128


def test_command_line_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "init-scale", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "initialiser  weight std" in printed
    assert "He divided   sqrt(n/2)" in printed
    assert (tmp_path / "init_scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![init_scale](init_scale.png)" in (tmp_path / "report.md").read_text()
