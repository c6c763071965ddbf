"""fit's Keras/PyTorch conveniences: validation_split, verbose, schedules built for fit's
steps per epoch (and refused when they do not fit), ReduceLROnPlateau, and all of them
through an interrupted and resumed run."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handgrad import nn, optim
from handgrad._fit_setup import interactive
from handgrad.callbacks import Callback, CSVLogger, ProgressBar
from handgrad.checkpoint import TrainingCheckpoint, load_checkpoint
from handgrad.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau
from handgrad.train import fit

X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _model(seed: int = 1) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(4, 8, rng=rng), nn.ReLU(), nn.Linear(8, 2, rng=rng))


def _fit(model: nn.Module | None = None, **kwargs: Any) -> tuple[nn.Module, dict[str, list[float]]]:
    model = model if model is not None else _model()
    opt = kwargs.pop("optimizer", None) or optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train = kwargs.pop("train", (X, Y))
    kwargs.setdefault("epochs", 3)
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("rng", 0)
    history = fit(model, nn.CrossEntropyLoss(), opt, train, **kwargs)
    history.history.pop("seconds", None)
    return model, history.history


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(np.array_equal(sa[k], sb[k]) for k in sa)


# -- validation_split ----------------------------------------------------------------


def test_validation_split_holds_out_the_last_samples_as_keras_does() -> None:
    split, history = _fit(validation_split=0.1)  # floor(50 * 0.9) = 45 train, 5 validate
    explicit, expected = _fit(train=(X[:45], Y[:45]), val=(X[45:], Y[45:]))
    assert history == expected and _same(split, explicit)
    _, with_quarter = _fit(validation_split=0.25)  # floor(37.5) = 37: 13 validate
    _, by_hand = _fit(train=(X[:37], Y[:37]), val=(X[37:], Y[37:]))
    assert with_quarter == by_hand


def test_validation_split_refuses_val_and_impossible_fractions() -> None:
    with pytest.raises(ValueError, match="give val= or validation_split=, not both"):
        _fit(val=(X, Y), validation_split=0.2)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"validation_split must be in \[0, 1\)"):
            _fit(validation_split=bad)
    with pytest.raises(ValueError, match="leaves 50 for training and 0 for validation"):
        _fit(validation_split=1e-20)
    with pytest.raises(ValueError, match="leaves 0 for training"):
        _fit(train=(X[:1], Y[:1]), validation_split=0.5)


# -- verbose -------------------------------------------------------------------------


def _epoch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("epoch ")]


def test_auto_is_silent_when_stdout_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    _fit()
    assert capsys.readouterr() == ("", "")


def test_auto_prints_a_line_per_epoch_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out, err = _Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)  # not a terminal: no bar
    _fit()
    assert [line.split()[1] for line in _epoch_lines(out.getvalue())] == ["1/3", "2/3", "3/3"]
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stdout", quiet)
    _fit(verbose=0)
    assert quiet.getvalue() == ""


def test_verbose_1_draws_a_bar_and_2_only_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _fit(verbose=2)
    assert len(_epoch_lines(capsys.readouterr().out)) == 3 and terminal.getvalue() == ""
    _fit(verbose=1)
    assert len(_epoch_lines(capsys.readouterr().out)) == 3
    assert "epoch 1/3" in terminal.getvalue() and "/7 " in terminal.getvalue()  # 50 / 8


def test_a_progress_bar_among_the_callbacks_is_the_display(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _fit(verbose=1, callbacks=[ProgressBar()])
    assert len(_epoch_lines(capsys.readouterr().out)) == 3  # once, not twice
    _fit(verbose=2, callbacks=[ProgressBar(quiet=True)])
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="verbose must be 'auto', 0, 1 or 2"):
        _fit(verbose=3)


def test_a_jupyter_kernel_counts_as_interactive(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel_stream = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
    monkeypatch.setattr(sys, "stdout", kernel_stream())
    assert interactive()
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert not interactive()


# -- schedules built for fit's steps per epoch ------------------------------------------


def _one_cycle(steps_per_epoch: int, epochs: int = 3) -> Any:
    return lambda opt, steps: OneCycleLR(
        opt, max_lr=0.2, epochs=epochs, steps_per_epoch=steps_per_epoch or steps
    )


def test_a_scheduler_function_gets_fits_steps_per_epoch() -> None:
    calls: list[tuple[Any, int]] = []

    def build(opt: Any, steps_per_epoch: int) -> OneCycleLR:
        calls.append((opt, steps_per_epoch))
        return OneCycleLR(opt, max_lr=0.2, epochs=3, steps_per_epoch=steps_per_epoch)

    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    built, history = _fit(model, optimizer=opt, validation_split=0.1, scheduler=build,
                          scheduler_interval="batch")  # fmt: skip
    assert calls == [(opt, 6)]  # 45 training samples, batches of 8
    by_hand = _model()
    opt2 = optim.SGD(by_hand.parameters(), lr=0.1, momentum=0.9)
    sched = OneCycleLR(opt2, max_lr=0.2, epochs=3, steps_per_epoch=6)
    _, expected = _fit(by_hand, optimizer=opt2, validation_split=0.1, scheduler=sched,
                       scheduler_interval="batch")  # fmt: skip
    assert history == expected and _same(built, by_hand)


def test_a_one_cycle_for_other_steps_is_refused_before_the_first_step() -> None:
    model = _model()
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"built with steps_per_epoch=469, but fit takes 7 steps"):
        _fit(model, scheduler=_one_cycle(469), scheduler_interval="batch")
    with pytest.raises(ValueError, match="steps_per_epoch=6, but fit takes 7"):
        _fit(model, scheduler=_one_cycle(6), scheduler_interval="batch")
    # built for steps but stepped once an epoch (the default interval): it would stay
    # near its starting rate for the whole run
    with pytest.raises(ValueError, match="built for 7 steps an epoch but would be stepped once"):
        _fit(model, scheduler=_one_cycle(7))
    assert _same(model, _model()) and before.keys() == model.state_dict().keys()


def test_a_one_cycle_too_short_for_the_run_is_refused_and_a_longer_one_is_not() -> None:
    short = lambda opt, steps: OneCycleLR(opt, max_lr=0.2, total_steps=20)  # noqa: E731
    with pytest.raises(
        ValueError, match=r"20 of its total_steps=20 steps left, but fit will take 21"
    ):
        _fit(scheduler=short, scheduler_interval="batch")
    # a schedule for 5 epochs trained for 3 of them (to be continued) is fine
    _, history = _fit(scheduler=_one_cycle(7, epochs=5), scheduler_interval="batch")
    assert len(history["loss"]) == 3
    with pytest.raises(TypeError, match="returned int, not a scheduler"):
        _fit(scheduler=lambda opt, steps: steps)
    with pytest.raises(TypeError, match="scheduler must be a learning-rate scheduler"):
        _fit(scheduler="onecycle")


# -- ReduceLROnPlateau ---------------------------------------------------------------


def test_fit_steps_reduce_on_plateau_with_the_monitored_metric() -> None:
    torch = pytest.importorskip("torch")
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    plateau = ReduceLROnPlateau(opt, factor=0.5, patience=1, threshold=0.05)
    _, history = _fit(model, optimizer=opt, scheduler=plateau, epochs=8, validation_split=0.2)
    # the same metrics through PyTorch's scheduler give the rates fit logged
    param = torch.nn.Parameter(torch.zeros(1))
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(
        torch.optim.SGD([param], lr=0.1), factor=0.5, patience=1, threshold=0.05
    )
    rates = [0.1]
    for val_loss in history["val_loss"][:-1]:
        theirs.step(val_loss)
        rates.append(theirs.get_last_lr()[0])
    assert history["lr"] == rates and min(rates) < 0.1  # it did cut the rate


def test_reduce_on_plateau_misuse_is_refused_up_front() -> None:
    def plateau(**kw: Any) -> Any:
        return lambda opt, steps: ReduceLROnPlateau(opt, **kw)

    with pytest.raises(ValueError, match="monitors 'val_loss' but fit has no validation data"):
        _fit(scheduler=plateau())
    with pytest.raises(ValueError, match="scheduler_interval='epoch'"):
        _fit(scheduler=plateau(), scheduler_interval="batch", validation_split=0.2)
    model = _model()  # a mistyped metric is refused before the first step, too
    with pytest.raises(ValueError, match="scheduler_monitor='val_acc' is not a metric fit logs"):
        _fit(model, scheduler=plateau(), scheduler_monitor="val_acc", validation_split=0.2)
    assert _same(model, _model())
    _, history = _fit(scheduler=plateau(mode="max", patience=0), scheduler_monitor="accuracy")
    assert len(history["lr"]) == 3


# -- everything through an interrupted, resumed run ----------------------------------


class _InterruptAt(Callback):
    def __init__(self, at: int) -> None:
        self.at, self.done = at, 0

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        self.done += 1
        if self.done == self.at:
            self.trainer.interrupt("interrupted by the test")


def _resumable(log: Path, ckpt: Path | None, schedule: str, **kwargs: Any) -> Any:
    model = _model()
    opt = optim.Adam(model.parameters(), lr=0.05)
    if schedule == "plateau":
        scheduler: Any = ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=0.2)
        interval = "epoch"
    else:
        scheduler = lambda o, steps: OneCycleLR(o, max_lr=0.05, epochs=6, steps_per_epoch=steps)  # noqa: E731
        interval = "batch"
    callbacks: list[Callback] = [CSVLogger(log, append=True)]
    if ckpt is not None:
        callbacks.append(TrainingCheckpoint(ckpt))  # the scheduler: the one fit steps
    callbacks += kwargs.pop("extra", [])
    return _fit(model, optimizer=opt, scheduler=scheduler, scheduler_interval=interval,
                callbacks=callbacks, epochs=6, validation_split=0.2, **kwargs)  # fmt: skip


def _rows_without_seconds(path: Path) -> list[list[str]]:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    return [row[:-1] for row in rows]  # the last column is seconds


@pytest.mark.parametrize("schedule", ["plateau", "onecycle"])
@pytest.mark.parametrize("at", [12, 15])  # 5 steps an epoch: mid-epoch 3, end of epoch 3
def test_an_interrupted_run_resumes_its_schedule_and_its_csv_log(
    tmp_path: Path, schedule: str, at: int
) -> None:
    straight, history = _resumable(tmp_path / "straight.csv", None, schedule)
    log, ckpt = tmp_path / "run.csv", tmp_path / "run.ckpt"
    _resumable(log, ckpt, schedule, extra=[_InterruptAt(at)])
    state = load_checkpoint(ckpt)
    assert (state.epoch, state.step) == divmod(at, 5)
    # a crash after the checkpoint: a row the resumed run will write again, and a torn one
    with open(log, "a") as fh:
        fh.write("4,0.1,0.9,0.2,0.8,0.05,0.01\n5,0.09")
    resumed, resumed_history = _resumable(log, None, schedule, resume=state)
    assert _same(resumed, straight)
    assert resumed_history == history
    assert _rows_without_seconds(log) == _rows_without_seconds(tmp_path / "straight.csv")
    assert [row[0] for row in _rows_without_seconds(log)[1:]] == ["1", "2", "3", "4", "5", "6"]
    if schedule == "plateau":
        assert len(set(history["lr"])) > 1  # the schedule acted
