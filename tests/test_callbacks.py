"""ProgressBar: a tqdm bar only on a terminal, one line per epoch, silence when quiet."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from handgrad.callbacks import ProgressBar
from handgrad.data import make_moons
from handgrad.nn.losses import CrossEntropyLoss
from handgrad.optim import Adam
from handgrad.recipes import build_mlp
from handgrad.train import fit


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _train(bar: ProgressBar, val: bool = True) -> None:
    x, y = make_moons(96, noise=0.1, rng=np.random.default_rng(0))
    x = x.astype(np.float32)
    model = build_mlp(2, [8], 2, rng=0)
    fit(
        model,
        CrossEntropyLoss(),
        Adam(model.parameters()),
        (x, y),
        val=(x, y) if val else None,
        epochs=2,
        batch_size=16,
        rng=0,
        callbacks=[bar],
    )


def _epoch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("epoch ")]


def test_epoch_lines_and_a_bar_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _train(ProgressBar())
    lines = _epoch_lines(capsys.readouterr().out)
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    for line in lines:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert f" {key} " in line, line
    bar = terminal.getvalue()
    assert "epoch 1/2" in bar and "epoch 2/2" in bar and "/6 " in bar  # 96 / 16 batches


def test_no_bar_when_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    _train(ProgressBar(), val=False)
    out = capsys.readouterr().out
    assert len(_epoch_lines(out)) == 2 and "val_loss" not in out
    assert pipe.getvalue() == ""


def test_no_bar_without_tqdm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    _train(ProgressBar())
    assert len(_epoch_lines(capsys.readouterr().out)) == 2
    assert terminal.getvalue() == ""


def test_quiet_prints_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _train(ProgressBar(quiet=True))
    assert capsys.readouterr().out == "" and terminal.getvalue() == ""


def test_lines_go_to_the_given_file(capsys: pytest.CaptureFixture[str]) -> None:
    sink = io.StringIO()
    _train(ProgressBar(file=sink))
    assert capsys.readouterr().out == ""
    assert len(_epoch_lines(sink.getvalue())) == 2
