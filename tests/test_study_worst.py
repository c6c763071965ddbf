"""``handgrad study worst``: each bad choice alone, with the symptom it shows; the same
seed gives the same table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handgrad import nn
from handgrad.cli import main
from handgrad.studies import Context, Report, run_study
from handgrad.studies.worst import NaiveSoftmaxCrossEntropy
from tests._studies import one_blas_thread, run_command  # noqa: F401

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return run_study("worst", Context(seed=0, quick=True, out=tmp_path_factory.mktemp("w")))


def test_each_bad_choice_has_its_symptom(report: Report) -> None:
    acc, dead = report.numbers["test_accuracy"], report.numbers["dead_units"]
    ref = acc["reference (all good)"]
    assert ref > 0.75
    for name in (
        "unnormalised 0-255 inputs",
        "learning rate 10",
        "gradients summed, not averaged",
    ):
        assert acc[name] < 0.3, name  # near chance
        assert dead[name] > 0.9, name  # the steps were so large they killed the ReLUs
    # no shuffling on sorted data: it ends predicting the last digit it saw
    assert acc["no shuffling (label-sorted data)"] < 0.3
    assert report.numbers["top_class_share"]["no shuffling (label-sorted data)"] > 0.5
    assert report.numbers["symptom"]["no shuffling (label-sorted data)"].startswith("predicts 9")
    # the naive softmax alone is harmless while logits stay small: the same run
    assert report.numbers["max_logit"]["naive softmax"] < 88.7
    assert abs(acc["naive softmax"] - ref) < 0.005
    # ...and overflows as soon as the logits are large
    combined = report.numbers["stopped"]["naive softmax + 0-255 inputs"]
    assert combined is not None and combined.startswith("non-finite loss")
    assert report.numbers["stopped"]["unnormalised 0-255 inputs"] is None  # stable: no NaN


def test_same_seed_same_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(2):
        out = str(tmp_path / str(i))
        assert main(["study", "worst", "--quick", "--seed", "5", "--out", out]) == 0
    texts = [(tmp_path / str(i) / "report.md").read_text() for i in range(2)]
    strip = [t.split("\n", 3)[3] for t in texts]  # the line after the title holds the time
    assert strip[0] == strip[1]
    printed = capsys.readouterr().out
    assert "`handgrad study worst --quick --seed 5`" in texts[0]
    assert "naive softmax + 0-255 inputs" in printed
    other = run_study("worst", Context(seed=6, quick=True, out=tmp_path / "6")).text()
    assert other.split("\n", 2)[2] not in printed  # another seed, other numbers


def test_naive_softmax_matches_until_it_overflows() -> None:
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((6, 10)).astype(np.float32) * 5, rng.integers(0, 10, 6)
    naive, stable = NaiveSoftmaxCrossEntropy(), nn.CrossEntropyLoss()
    assert naive(z, y) == pytest.approx(stable(z, y), rel=1e-5)
    np.testing.assert_allclose(naive.backward(), stable.backward(), atol=1e-6)
    z[0, 3] = 100.0  # exp(100) is inf in float32
    with np.errstate(all="ignore"):
        assert not np.isfinite(naive(z, y))
    assert np.isfinite(stable(z, y))
