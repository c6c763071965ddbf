"""Training checkpoints: an interrupted run, resumed, ends bit for bit as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handgrad import load, nn, optim
from handgrad.callbacks import Callback, EarlyStopping
from handgrad.checkpoint import CheckpointError, TrainingCheckpoint, load_checkpoint
from handgrad.serialization import ModelFileError, save
from handgrad.train import fit

X = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
VAL = (X[:40], Y[:40])
EPOCHS, BATCH = 5, 32  # 7 steps an epoch, the last one short


class InterruptAt(Callback):
    """Interrupt the run after its ``at``-th step (counted over the whole run)."""

    def __init__(self, at: int) -> None:
        self.at, self.done = at, 0

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        self.done += 1
        if self.done == self.at:
            self.trainer.interrupt("interrupted by the test")


def _run(
    checkpoint: Path | None = None,
    interrupt_at: int = 0,
    resume: Path | None = None,
    epochs: int = EPOCHS,
) -> tuple[nn.Module, dict[str, list[float]]]:
    """A run that uses every kind of state: dropout, batch norm, Adam, a per-batch
    schedule, augmentation from fit's generator, early stopping."""
    rng = np.random.default_rng(3)
    model = nn.Sequential(
        nn.Linear(6, 16, rng=rng), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3, rng=rng),
        nn.Linear(16, 3, rng=rng),
    )  # fmt: skip
    opt = optim.Adam(model.parameters(), lr=0.01)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.02, total_steps=EPOCHS * 7)
    callbacks: list[Callback] = [InterruptAt(interrupt_at)] if interrupt_at else []
    if checkpoint is not None:
        callbacks.append(TrainingCheckpoint(checkpoint, scheduler=sched))
    stop = EarlyStopping(patience=10, restore_best_weights=True)
    state = load_checkpoint(resume) if resume is not None else None
    history = fit(
        model, nn.CrossEntropyLoss(), opt, (X, Y), VAL, epochs=epochs, batch_size=BATCH,
        rng=rng, scheduler=sched, scheduler_interval="batch", callbacks=[*callbacks, stop],
        augment=lambda xb, g: xb + g.normal(scale=0.01, size=xb.shape).astype(xb.dtype),
        resume=state,
    )  # fmt: skip
    return model, history.history


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("at", [7, 14, 10, 1, 34])  # epoch ends, mid-epoch, first, last-but-one
def test_an_interrupted_run_resumes_bit_for_bit(tmp_path: Path, at: int) -> None:
    straight, history = _run()
    path = tmp_path / "run.ckpt"
    _, first = _run(path, interrupt_at=at)
    state = load_checkpoint(path)
    assert (state.epoch, state.step) == divmod(at, 7)
    assert len(first.get("loss", [])) == at // 7  # an unfinished epoch is not logged
    resumed, resumed_history = _run(resume=path)
    assert _same_weights(resumed, straight)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert resumed_history[key] == history[key], key


def test_a_checkpoint_is_written_every_epoch_and_loads_as_a_model(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    _run(path, epochs=2)
    state = load_checkpoint(path)
    assert (state.epoch, state.step, len(state.history["loss"])) == (2, 0, 2)
    assert _same_weights(load(path), state.model)


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    _run(path, interrupt_at=10)
    model = nn.Sequential(nn.Linear(6, 3, rng=np.random.default_rng(0)))
    with pytest.raises(CheckpointError, match="same optimizer"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), (X, Y),
            resume=load_checkpoint(path), scheduler=None)  # fmt: skip
    with pytest.raises(CheckpointError, match="200 samples, this one on 100"):
        _fit_other_data(path)


def _fit_other_data(path: Path) -> None:
    rng = np.random.default_rng(3)
    model = nn.Sequential(
        nn.Linear(6, 16, rng=rng), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3, rng=rng),
        nn.Linear(16, 3, rng=rng),
    )  # fmt: skip
    opt = optim.Adam(model.parameters(), lr=0.01)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.02, total_steps=EPOCHS * 7)
    fit(model, nn.CrossEntropyLoss(), opt, (X[:100], Y[:100]), epochs=EPOCHS,
        scheduler=sched, scheduler_interval="batch", resume=load_checkpoint(path))  # fmt: skip


def test_a_plain_model_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    save(nn.Sequential(nn.Linear(2, 2, rng=np.random.default_rng(0))), path)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_checkpoint(path)
    assert issubclass(CheckpointError, ModelFileError)


def test_initial_epoch_counts_on_from_there() -> None:
    model = nn.Sequential(nn.Linear(6, 3, rng=np.random.default_rng(0)))
    history = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), (X, Y),
                  epochs=5, initial_epoch=3, rng=0)  # fmt: skip
    assert history.epochs == 2
    with pytest.raises(ValueError, match="initial_epoch"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), (X, Y),
            initial_epoch=-1)  # fmt: skip
