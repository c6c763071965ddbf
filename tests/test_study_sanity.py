"""``handgrad study sanity``: the toy problems are learned, and overfitting one batch
passes the correct network and catches every deliberately broken one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handgrad import nn, optim
from handgrad.cli import main
from handgrad.studies import Context, Report, run_study
from handgrad.studies.sanity import InvertedMaskReLU, SoftmaxLayer, overfit_one_batch
from tests._studies import one_blas_thread, run_command  # noqa: F401

pytest.importorskip("matplotlib")

BROKEN = [
    "all weights zero",
    "softmax before CrossEntropyLoss",
    "ReLU backward with inverted mask",
    "optimizer on another model's weights",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return run_study("sanity", Context(seed=0, quick=True, out=tmp_path_factory.mktemp("s")))


def test_toy_problems_need_the_hidden_layers(report: Report) -> None:
    acc = report.numbers["accuracy"]
    for problem in ("XOR", "two moons", "spirals"):
        assert acc[problem, "MLP 2-32-32"] >= 0.95, problem
    assert acc["XOR", "softmax regression"] < 0.7  # no line separates XOR
    assert acc["spirals", "softmax regression"] < 0.7


def test_overfit_check_catches_every_broken_network(report: Report) -> None:
    assert report.numbers["broken"] == BROKEN
    loss = report.numbers["overfit_loss"]
    assert loss["correct MLP"] < 0.01
    assert min(loss[name] for name in BROKEN) > 0.5  # not borderline: far from zero
    # the double softmax gets the batch right and is still caught, by its loss:
    # its probabilities as logits cannot give a loss below log(1 + 9/e) = 1.46
    assert report.numbers["overfit_accuracy"]["softmax before CrossEntropyLoss"] >= 0.95
    assert loss["softmax before CrossEntropyLoss"] > np.log(1 + 9 / np.e) - 1e-3


def test_command_prints_verdicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "sanity", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("BROKEN: cannot overfit") == 4
    assert out.count("overfits: OK") == 1
    for name in ("decision_boundaries", "overfit_one_batch"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_broken_layers_are_what_they_claim() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4))
    dout = rng.standard_normal((5, 4))
    relu = InvertedMaskReLU()
    np.testing.assert_array_equal(relu(x), np.maximum(x, 0))  # a correct forward...
    np.testing.assert_array_equal(relu.backward(dout), dout * (x <= 0))  # ...the wrong backward
    layer = SoftmaxLayer()
    p = layer(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    h = 1e-6  # the softmax layer's own backward is right: the bug is where it sits
    bumped = x.copy()
    bumped[2, 1] += h
    numeric = ((SoftmaxLayer()(bumped) - p) * dout).sum() / h
    assert abs(layer.backward(dout)[2, 1] - numeric) < 1e-5


def test_overfit_one_batch_on_a_learnable_batch() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 8)).astype(np.float32), rng.integers(0, 3, 16)
    model = nn.Sequential(nn.Linear(8, 32, rng=rng), nn.ReLU(), nn.Linear(32, 3, rng=rng))
    check = overfit_one_batch(model, optim.Adam(model.parameters(), lr=1e-2), x, y, 150)
    assert check.passed and check.accuracy == 1.0
    assert len(check.losses) == 151 and check.losses[0] > 0.5
