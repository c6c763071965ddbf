"""The training loop: learning smoke tests, determinism, callbacks, the non-finite guard."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from handgrad.callbacks import Callback, EarlyStopping, ModelCheckpoint, TimeLimit
from handgrad.data import make_moons, make_xor
from handgrad.nn.activations import Tanh
from handgrad.nn.layers import Linear
from handgrad.nn.losses import CrossEntropyLoss
from handgrad.nn.module import Sequential
from handgrad.optim import SGD, Adam
from handgrad.recipes import build_mlp
from handgrad.serialization import load
from handgrad.train import History, evaluate, fit, predict, predict_proba


def _moons(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_moons(n, noise=0.1, rng=np.random.default_rng(seed))
    return x.astype(np.float32), y


def test_xor_is_learned_perfectly() -> None:
    x, y = make_xor(rng=np.random.default_rng(0))
    model = Sequential(Linear(2, 8, rng=0), Tanh(), Linear(8, 2, rng=1))
    fit(
        model,
        CrossEntropyLoss(),
        Adam(model.parameters(), lr=0.05),
        (x.astype(np.float32), y),
        epochs=300,
        batch_size=len(x),
        rng=0,
    )
    np.testing.assert_array_equal(predict(model, x.astype(np.float32)), y)


def test_two_moons_reach_97_percent_training_accuracy() -> None:
    x, y = _moons()
    model = build_mlp(2, [32, 32], 2, rng=0)
    history = fit(
        model,
        CrossEntropyLoss(),
        Adam(model.parameters(), lr=0.01),
        (x, y),
        epochs=60,
        batch_size=32,
        rng=0,
    )
    assert history["accuracy"][-1] >= 0.97
    assert np.mean(predict(model, x) == y) >= 0.97


def _run(seed: int) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    x, y = _moons(200)
    model = build_mlp(2, [16], 2, dropout=0.1, rng=seed)
    history = fit(
        model,
        CrossEntropyLoss(),
        Adam(model.parameters(), lr=0.01),
        (x, y),
        val=(x[:50], y[:50]),
        epochs=3,
        batch_size=16,
        rng=seed,
    )
    history.history.pop("seconds")
    return history.history, model.state_dict()


def test_same_seed_same_run_bit_for_bit() -> None:
    h1, s1 = _run(5)
    h2, s2 = _run(5)
    assert h1 == h2
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k])
    h3, _ = _run(6)
    assert h3 != h1


def test_history_has_keras_style_keys() -> None:
    h, _ = _run(0)
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert all(len(v) == 3 for v in h.values())


def test_evaluate_and_predict_agree_and_are_batched() -> None:
    x, y = _moons(300)
    model = build_mlp(2, [16], 2, rng=0)
    fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=0.01), (x, y), epochs=5, rng=0)
    proba = predict_proba(model, x, batch_size=7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(proba.argmax(axis=1), predict(model, x, batch_size=1000))
    result = evaluate(model, CrossEntropyLoss(), x, y, batch_size=64)
    assert result["accuracy"] == pytest.approx(np.mean(predict(model, x) == y))
    whole = CrossEntropyLoss()(model.eval().forward(x), y)
    assert result["loss"] == pytest.approx(whole, rel=1e-5)


def test_uint8_images_are_scaled_per_batch() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(64, 4, 4), dtype=np.uint8)
    y = (x.reshape(64, -1).mean(axis=1) > 127).astype(np.int64)
    model = build_mlp(16, [8], 2, rng=0)
    seen: list[np.ndarray] = []
    original = model.forward
    model.forward = lambda xb: (seen.append(xb), original(xb))[1]  # type: ignore[method-assign]
    fit(
        model,
        CrossEntropyLoss(),
        SGD(model.parameters(), lr=0.1),
        (x, y),
        epochs=1,
        batch_size=32,
        rng=0,
    )
    assert seen[0].dtype == np.float32 and seen[0].max() <= 1.0 and seen[0].shape == (32, 4, 4)


class _NaNOnCall(CrossEntropyLoss):
    def __init__(self, bad_call: int) -> None:
        super().__init__()
        self.calls, self.bad_call = 0, bad_call

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:
        self.calls += 1
        value = super().forward(input, target)
        return float("nan") if self.calls == self.bad_call else value


class _Snapshots(Callback):
    def __init__(self) -> None:
        self.states: list[dict[str, np.ndarray]] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        self.states.append(self.trainer.model.state_dict())


def test_non_finite_loss_stops_with_the_weights_the_epoch_began_with() -> None:
    x, y = _moons(160)  # 10 batches of 16 an epoch
    model = build_mlp(2, [8], 2, rng=0)
    snaps = _Snapshots()
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        history = fit(
            model,
            _NaNOnCall(bad_call=13),
            Adam(model.parameters(), lr=0.01),
            (x, y),
            epochs=5,
            batch_size=16,
            rng=0,
            callbacks=[snaps],
        )
    reason = str(history.stop_reason)
    assert reason.startswith("non-finite loss (nan) at epoch 2, batch 3: stopped; the weights ")
    assert "restored to those at the start of epoch 2" in reason
    assert len(snaps.states) == 12
    # states[9]: after epoch 1's last step, the weights epoch 2 began with
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, snaps.states[9][k])
    assert not all(np.array_equal(snaps.states[9][k], snaps.states[11][k]) for k in snaps.states[9])


class _BadGradientOnCall(CrossEntropyLoss):
    """Its gradient is ``value`` everywhere on the ``bad_call``-th backward."""

    def __init__(self, bad_call: int, value: float) -> None:
        super().__init__()
        self.calls, self.bad_call, self.value = 0, bad_call, value

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        self.calls += 1
        grad = super().backward(dloss)
        return np.full_like(grad, self.value) if self.calls == self.bad_call else grad


def test_a_non_finite_gradient_is_caught_by_the_next_loss_and_named() -> None:
    x, y = _moons(160)
    model = build_mlp(2, [8], 2, rng=0)
    start = model.state_dict()
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        history = fit(
            model,
            _BadGradientOnCall(bad_call=4, value=np.nan),
            SGD(model.parameters(), lr=0.1),
            (x, y),
            epochs=3,
            batch_size=16,
            rng=0,
        )
    assert str(history.stop_reason).startswith(
        "non-finite loss (nan) at epoch 1, batch 5, after the update of batch 4 made the "
        "weights non-finite: stopped; the weights are restored to those at the start of epoch 1"
    )
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, start[k])


def test_a_non_finite_state_the_loss_never_shows_is_caught_at_the_epoch_end() -> None:
    # The gradient of an epoch's last batch goes NaN: no loss of that epoch can show
    # it, and the check of the whole state at the epoch's end does.
    x, y = _moons(160)
    model = build_mlp(2, [8], 2, rng=0)
    snaps = _Snapshots()
    with pytest.warns(RuntimeWarning, match="non-finite weights or optimizer state"):
        history = fit(
            model,
            _BadGradientOnCall(bad_call=20, value=np.nan),
            Adam(model.parameters(), lr=1e-3),
            (x, y),
            epochs=3,
            batch_size=16,
            rng=0,
            callbacks=[snaps],
        )
    assert history.stop_reason == (
        "non-finite weights or optimizer state at the end of epoch 2 (after batch 10): "
        "stopped; the weights are restored to those at the start of epoch 2 (try a lower "
        "learning rate)"
    )
    assert history.epochs == 2 and all(np.isfinite(history["loss"]))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, snaps.states[9][k])


def test_a_diverging_run_ends_on_finite_weights_with_one_warning() -> None:
    x, y = _moons(256)
    model = build_mlp(2, [16], 2, rng=0, batch_norm=True)
    seen: list[float] = []

    class Losses(Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
            seen.append(logs["loss"])

    with pytest.warns(RuntimeWarning) as caught, np.errstate(all="raise"):
        history = fit(
            model,
            CrossEntropyLoss(),
            SGD(model.parameters(), lr=1e30),
            (x, y),
            epochs=3,
            batch_size=32,
            rng=0,
            callbacks=[Losses()],
        )
    assert [str(w.message) for w in caught] == [history.stop_reason]
    assert "restored" in str(history.stop_reason)
    assert all(np.isfinite(v) for v in seen)
    for name, value in model.state_dict().items():
        assert np.all(np.isfinite(value)), name
    # the restored weights give a finite loss again
    with np.errstate(all="raise"):
        assert np.isfinite(evaluate(model, CrossEntropyLoss(), x, y)["loss"])


def test_early_stopping_restores_the_best_weights() -> None:
    x, y = _moons(200)
    model = build_mlp(2, [8], 2, rng=0)

    class Scripted(Callback):
        """Overwrite val_loss with a script: best at epoch 2, then worse."""

        values = (1.0, 0.5, 0.6, 0.7, 0.8, 0.9)

        def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
            logs["val_loss"] = self.values[epoch]
            if epoch == 1:
                self.best = self.trainer.model.state_dict()

    scripted = Scripted()
    stopper = EarlyStopping(patience=2, restore_best_weights=True)
    history = fit(
        model,
        CrossEntropyLoss(),
        Adam(model.parameters(), lr=0.05),
        (x, y),
        val=(x, y),
        epochs=6,
        rng=0,
        callbacks=[scripted, stopper],
    )
    # best at epoch 2; epochs 3 and 4 do not improve: patience 2 stops after epoch 4
    assert history.epochs == 4 and "early stopping" in str(history.stop_reason)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, scripted.best[k])


def test_early_stopping_names_a_missing_metric() -> None:
    x, y = _moons(64)
    model = build_mlp(2, [4], 2, rng=0)
    with pytest.raises(KeyError, match=r"val_loss.*need validation data"):
        fit(
            model,
            CrossEntropyLoss(),
            Adam(model.parameters()),
            (x, y),
            epochs=2,
            callbacks=[EarlyStopping()],
        )


class _Slow(Callback):
    """10 ms per batch: training slow enough to time."""

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        time.sleep(0.01)


def _timed_fit(
    x: np.ndarray,
    y: np.ndarray,
    callbacks: list[Callback],
    val: tuple[np.ndarray, np.ndarray] | None = None,
    hidden: int = 8,
) -> tuple[History, float]:
    """Train for (far) more epochs than the limit allows: ``(history, seconds taken)``."""
    model = build_mlp(2, [hidden, hidden], 2, rng=0)
    start = time.perf_counter()
    history = fit(
        model,
        CrossEntropyLoss(),
        Adam(model.parameters()),
        (x, y),
        val=val,
        epochs=1000,
        batch_size=8,
        rng=0,
        callbacks=callbacks,
    )
    return history, time.perf_counter() - start


def test_time_limit_stops_inside_the_limit() -> None:
    history, elapsed = _timed_fit(*_moons(400), [_Slow(), TimeLimit(0.5)])
    assert elapsed < 0.5
    assert str(history.stop_reason).startswith("time limit")
    assert history.epochs >= 1


def test_time_limit_leaves_room_for_the_first_validation() -> None:
    # One epoch of 50 batches (about 0.5 s) and a validation set 40x the
    # training set: the first validation, not yet timed, must be budgeted for.
    x, y = _moons(400)
    val = (np.tile(x, (40, 1)), np.tile(y, 40))
    history, elapsed = _timed_fit(x, y, [_Slow(), TimeLimit(0.6)], val=val, hidden=256)
    assert elapsed < 0.6
    assert str(history.stop_reason).startswith("time limit")
    assert len(history["val_loss"]) == history.epochs >= 1


def test_time_limit_counts_from_a_given_start_and_keeps_a_margin() -> None:
    before = time.perf_counter() - 0.3  # as if the program had started 0.3 s ago
    history, elapsed = _timed_fit(*_moons(64), [TimeLimit(0.6, margin=0.1, start=before)])
    assert elapsed < 0.2  # 0.6 - 0.3 already gone - 0.1 margin
    assert str(history.stop_reason).startswith("time limit")
    with pytest.raises(ValueError, match="positive number of seconds"):
        TimeLimit(float("nan"))
    with pytest.raises(ValueError, match="margin"):
        TimeLimit(1.0, margin=-1)


def test_checkpoint_saves_the_best_model(tmp_path: Path) -> None:
    x, y = _moons(200)
    model = build_mlp(2, [8], 2, rng=0)
    path = tmp_path / "best.npz"
    fit(
        model,
        CrossEntropyLoss(),
        Adam(model.parameters(), lr=0.01),
        (x, y),
        val=(x, y),
        epochs=3,
        rng=0,
        callbacks=[ModelCheckpoint(path, monitor="val_accuracy")],
    )
    assert path.exists()
    assert load(path).forward(x[:3]).shape == (3, 2)


def test_bad_data_is_named() -> None:
    model = build_mlp(2, [4], 2, rng=0)
    opt = Adam(model.parameters())
    x, y = _moons(20)
    with pytest.raises(ValueError, match="x has 20 samples but y has 19"):
        fit(model, CrossEntropyLoss(), opt, (x, y[:-1]))
    x_nan = x.copy()
    x_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(model, CrossEntropyLoss(), opt, (x_nan, y))


def _held_arrays(model: Sequential, loss: CrossEntropyLoss) -> int:
    """Bytes of ndarrays the modules (fused ones too) and the loss keep beyond weights."""
    from handgrad.nn.module import _CACHE_ATTRIBUTES

    def arrays(value: object) -> int:
        if isinstance(value, np.ndarray):
            return value.nbytes
        if isinstance(value, (tuple, list)):
            return sum(arrays(v) for v in value)
        if isinstance(value, dict):
            return sum(arrays(v) for v in value.values())
        return 0

    held = arrays(loss.__dict__.get("_cache"))
    for module in model.modules():
        for m in (module, *(module.__dict__.get("_fused") or {}).values()):
            held += sum(arrays(m.__dict__.get(name)) for name in (*_CACHE_ATTRIBUTES, "_scratch"))
    return held


def test_fit_predict_and_evaluate_leave_no_batch_caches_behind() -> None:
    """A forward keeps one batch's activations for backward, in eval mode too; fit,
    predict and evaluate used to leave the last batch's behind in every layer (and
    the fused conv-pool scratch buffers). Now a finished call holds weights only."""
    from handgrad.nn import Conv2d, Dropout, Flatten, MaxPool2d, ReLU

    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = Sequential(
        Conv2d(1, 4, 3, rng=0), ReLU(), MaxPool2d(2), Flatten(), Dropout(0.2, rng=1),
        Linear(36, 3, rng=2),
    )  # fmt: skip
    loss = CrossEntropyLoss()
    model(x[:8])
    loss(model(x[:8]), y[:8])
    assert _held_arrays(model, loss) > 0
    fit(model, loss, SGD(model.parameters(), lr=0.1), (x, y), (x, y), epochs=1, rng=0)
    assert _held_arrays(model, loss) == 0
    model.train()
    model(x)
    assert _held_arrays(model, loss) > 0
    predict(model, x)
    assert _held_arrays(model, loss) == 0
    loss(model(x), y)
    evaluate(model, loss, x, y)
    assert _held_arrays(model, loss) == 0
    # a backward now is the error of a backward without a forward, not stale gradients
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(np.ones((64, 3), np.float32))
    # and the model still trains and predicts the same as before the clearing
    before = predict(model, x)
    model.clear_cache()
    assert np.array_equal(predict(model, x), before)


def test_integer_images_train_the_same_through_fit_s_reused_batch_buffer() -> None:
    # fit scales integer batches into buffers it keeps across steps; the public
    # default_transform makes new arrays: the two must give the same run, bit for bit
    from handgrad.train import default_transform

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (100, 12), dtype=np.uint8)  # 100 = 3 batches of 32 and one of 4
    y = rng.integers(0, 3, 100)
    runs = []
    for transform in (None, default_transform(np.dtype(np.float32))):
        model = build_mlp(12, [8], 3, rng=0)
        fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=0.01), (x, y),
            epochs=3, batch_size=32, rng=0, transform=transform)  # fmt: skip
        runs.append(model.state_dict())
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])


def test_a_divergence_rolls_the_optimizer_back_too_so_the_next_fit_trains() -> None:
    # A NaN gradient reaches the optimizer (the guard no longer checks gradients):
    # Adam's moments turn NaN with the weights, and both are rolled back.
    x, y = _moons(160)
    model = build_mlp(2, [8], 2, rng=0)
    opt = Adam(model.parameters(), lr=0.01)
    fit(model, CrossEntropyLoss(), opt, (x, y), epochs=1, batch_size=16, rng=0)
    before = [{k: v.copy() for k, v in s.items() if isinstance(v, np.ndarray)}
              for s in opt.state.values()]  # fmt: skip
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        fit(model, _BadGradientOnCall(bad_call=3, value=np.nan), opt, (x, y),
            epochs=2, batch_size=16, rng=1)  # fmt: skip
    after = [{k: v for k, v in s.items() if isinstance(v, np.ndarray)} for s in opt.state.values()]
    for b, a in zip(before, after, strict=True):
        for k in b:
            np.testing.assert_array_equal(a[k], b[k])
    history = fit(model, CrossEntropyLoss(), opt, (x, y), epochs=2, batch_size=16, rng=2)
    assert history.stop_reason is None and history.epochs == 2


def test_a_divergence_overrides_a_gentler_stop_and_warns() -> None:
    x, y = _moons(160)
    model = build_mlp(2, [8], 2, rng=0)

    class StopAtEpochEnd(Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
            if batch == 0:
                self.trainer.request_stop("asked to stop after this epoch")

    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        history = fit(model, _NaNOnCall(bad_call=4), Adam(model.parameters(), lr=0.01), (x, y),
                      epochs=3, batch_size=16, rng=0, callbacks=[StopAtEpochEnd()])  # fmt: skip
    assert str(history.stop_reason).startswith("non-finite loss (nan) at epoch 1, batch 4")


def test_training_a_model_that_is_already_nan_is_refused() -> None:
    x, y = _moons(64)
    model = build_mlp(2, [8], 2, rng=0)
    next(iter(model.parameters())).data[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values before training"):
        fit(model, CrossEntropyLoss(), Adam(model.parameters()), (x, y), epochs=1)


def test_augment_gets_a_fresh_array_for_every_integer_batch() -> None:
    # fit's reused buffer is only for batches nothing else sees: an augment may keep one
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 4), dtype=np.uint8)
    y = rng.integers(0, 2, 64)
    seen: list[np.ndarray] = []

    def keep(xb: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        seen.append(xb)
        return xb

    model = build_mlp(4, [4], 2, rng=0)
    fit(model, CrossEntropyLoss(), Adam(model.parameters()), (x, y), epochs=1, batch_size=16,
        rng=0, augment=keep)  # fmt: skip
    assert len(seen) == 4 and len({id(a) for a in seen}) == 4
    assert not any(np.shares_memory(a, b) for i, a in enumerate(seen) for b in seen[i + 1 :])
