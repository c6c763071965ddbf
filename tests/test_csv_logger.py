"""CSVLogger: Keras's callback (filename, separator, append), a row on disk per epoch."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from handgrad import nn, optim
from handgrad.callbacks import Callback, CSVLogger
from handgrad.train import fit

X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int64)


def _train(logger: CSVLogger, epochs: int = 3, val: bool = True, extra: tuple = ()) -> dict:
    model = nn.Sequential(nn.Linear(3, 2, rng=0))
    history = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), (X, Y),
                  val=(X[:10], Y[:10]) if val else None, epochs=epochs, batch_size=16, rng=0,
                  callbacks=[logger, *extra])  # fmt: skip
    return history.history


def test_a_header_and_a_row_per_epoch_with_the_logged_values(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    history = _train(CSVLogger(path))
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds"
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3"]
    for i, line in enumerate(lines[1:]):
        values = [float(v) for v in line.split(",")[1:]]
        keys = lines[0].split(",")[1:]
        assert values == [history[k][i] for k in keys]  # repr: every digit


def test_separator_and_replacing_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "log.tsv"
    path.write_text("an old file\n")
    _train(CSVLogger(path, separator="\t"), val=False)
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch\tloss\taccuracy\tlr\tseconds" and len(lines) == 4
    with pytest.raises(ValueError, match="separator"):
        CSVLogger(path, separator="\n")


def test_append_keeps_the_header_and_drops_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    _train(CSVLogger(path), epochs=2)
    with open(path, "a") as fh:
        fh.write("3,0.5,0.")  # a row cut short by a crash
    _train(CSVLogger(path, append=True), epochs=2)
    lines = path.read_text().splitlines()
    assert len(lines) == 5 and lines.count(lines[0]) == 1
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "1", "2"]
    assert all(len(line.split(",")) == 7 for line in lines)


def test_append_to_other_columns_fills_na_and_warns_once(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss,lr,val_f1\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(CSVLogger(path, append=True), epochs=2, val=False)
    assert [str(w.message) for w in caught if "CSVLogger" in str(w.message)] == [
        f"CSVLogger: {path} has no column for ['accuracy', 'seconds']; left out of every row"
    ]
    rows = path.read_text().splitlines()[1:]
    assert [row.split(",")[3] for row in rows] == ["NA", "NA"]


def test_each_row_is_on_disk_when_its_epoch_ends(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    seen: list[int] = []

    class Reader(Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
            seen.append(len(path.read_text().splitlines()))

    _train(CSVLogger(path), extra=(Reader(),))
    assert seen == [2, 3, 4]


def test_a_file_that_cannot_be_written_is_refused_before_training(tmp_path: Path) -> None:
    """It used to fail when the first epoch ended, naming a hidden temp file."""

    class Recorder(Callback):
        steps = 0

        def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
            self.steps += 1

    model = nn.Sequential(nn.Linear(4, 3, rng=0))
    data = (np.zeros((8, 4), np.float32), np.zeros(8, np.int64))
    for target, message in [
        (tmp_path / "nodir" / "log.csv", "the directory .*nodir does not exist"),
        (tmp_path, "is a directory; give a file name such as"),
    ]:
        seen = Recorder()
        with pytest.raises(ValueError, match=f"CSVLogger: {re.escape(str(target))}: {message}"):
            fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), data,
                epochs=1, callbacks=[seen, CSVLogger(target)], verbose=0)  # fmt: skip
        assert seen.steps == 0
