"""What the lean training step must not change: behaviour a hostile review found at risk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handgrad import nn, optim
from handgrad.checkpoint import TrainingCheckpoint, load_checkpoint
from handgrad.nn.losses import CrossEntropyLoss
from handgrad.nn.module import Module, Sequential
from handgrad.nn.parameter import Parameter
from handgrad.train import fit


def _data(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


def test_cross_entropy_keeps_its_own_copy_of_the_labels() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    loss = CrossEntropyLoss()
    loss.forward(scores, y)
    expected = loss.backward()
    loss.forward(scores, y)
    y[:] = 2  # the caller reuses its array between forward and backward
    np.testing.assert_array_equal(loss.backward(), expected)


class _Scale(Module):
    """Equal to any other _Scale (a config-style __eq__): Sequential must still
    notice that one replaced the other."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x * self.factor

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Scale)

    __hash__ = Module.__hash__


def test_a_replaced_module_runs_even_when_it_compares_equal_to_the_old_one() -> None:
    model = Sequential(_Scale(1.0))
    x = np.ones((1, 2), np.float32)
    assert model.forward(x)[0, 0] == 1.0
    model._modules["0"] = _Scale(5.0)
    assert model.forward(x)[0, 0] == 5.0
    model.append(_Scale(2.0))
    assert model.forward(x)[0, 0] == 10.0


def test_a_private_attribute_that_was_a_parameter_is_unregistered_when_reassigned() -> None:
    m = Module()
    m._w = 0
    m._w = Parameter(np.ones(2))
    assert "_w" in m._parameters
    m._w = 3.0
    assert "_w" not in m._parameters and m._w == 3.0


def test_a_duck_typed_optimizer_with_arrays_in_its_state_trains() -> None:
    x, y = _data()
    model = nn.Sequential(nn.Linear(4, 3, rng=0))

    class Plain:  # not a handgrad Optimizer: state maps ids to arrays
        def __init__(self, params: list[Parameter]) -> None:
            self.params = params
            self.param_groups = [{"lr": 0.1, "params": params}]
            self.state = {id(p): np.zeros_like(p.data) for p in params}

        def zero_grad(self) -> None:
            for p in self.params:
                p.zero_grad()

        def step(self) -> None:
            for p in self.params:
                p.data -= 0.1 * p.grad

    history = fit(model, CrossEntropyLoss(), Plain(list(model.parameters())), (x, y), epochs=2)
    assert history.epochs == 2 and history.stop_reason is None


class _NaNAt(CrossEntropyLoss):
    def __init__(self, call: int) -> None:
        super().__init__()
        self.calls, self.call = 0, call

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:
        self.calls += 1
        value = super().forward(input, target)
        return float("nan") if self.calls == self.call else value


def test_no_checkpoint_is_written_for_an_epoch_that_diverged(tmp_path: Path) -> None:
    x, y = _data()  # 6 batches of 16 an epoch
    model = nn.Sequential(nn.Linear(4, 3, rng=0))
    opt = optim.Adam(model.parameters(), lr=0.01)
    path = tmp_path / "run.ckpt.npz"
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        fit(model, _NaNAt(call=9), opt, (x, y), epochs=3, batch_size=16, rng=0,
            callbacks=[TrainingCheckpoint(path)])  # fmt: skip
    state = load_checkpoint(path)
    # the checkpoint of epoch 1's end: the state epoch 2 began with, which fit restored
    assert state.epoch == 1 and state.step == 0
    saved = state.model.state_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, saved[name])
