"""The Module machinery: names, state dicts, modes, dtype conversion, errors, initialisers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from handgrad.nn import (
    BatchNorm1d,
    Dropout,
    Flatten,
    Identity,
    Linear,
    Module,
    Parameter,
    ReLU,
    Sequential,
    init,
)


def _mlp() -> Sequential:
    return Sequential(
        Linear(4, 6, rng=0), BatchNorm1d(6), ReLU(), Dropout(0.2, rng=0), Linear(6, 3, rng=1)
    )


def test_names_follow_pytorch() -> None:
    model = _mlp()
    assert [n for n, _ in model.named_parameters()] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "4.weight",
        "4.bias",
    ]
    assert list(model.state_dict()) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "4.weight",
        "4.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    assert model.num_parameters() == 4 * 6 + 6 + 6 + 6 + 6 * 3 + 3


def test_state_dict_holds_copies() -> None:
    model = _mlp()
    state = model.state_dict()
    state["0.weight"][...] = 7.0
    assert not np.any(model[0].weight.data == 7.0)


def test_load_state_dict_names_the_problem_and_changes_nothing() -> None:
    model = _mlp()
    before = model.state_dict()
    state = model.state_dict()
    del state["0.bias"]
    state["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['0.bias'\]; unexpected keys \['extra'\]"):
        model.load_state_dict(state)
    bad = model.state_dict()
    bad["4.weight"] = np.zeros((2, 6))
    bad["0.weight"] = np.ones((6, 4))
    with pytest.raises(ValueError, match=r"'4.weight' has shape \(2, 6\) in the state dict"):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_gradients_accumulate_until_zero_grad() -> None:
    lin = Linear(3, 2, rng=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((4, 3))
    lin.forward(x)
    lin.backward(np.ones((4, 2)))
    once = lin.weight.grad.copy()
    lin.backward(np.ones((4, 2)))
    np.testing.assert_allclose(lin.weight.grad, 2 * once)
    lin.zero_grad()
    assert not lin.weight.grad.any() and not lin.bias.grad.any()


def test_train_and_eval_propagate() -> None:
    model = _mlp()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_to_converts_parameters_grads_and_buffers() -> None:
    model = _mlp().to(np.float64)
    for _, p in model.named_parameters():
        assert p.data.dtype == np.float64 and p.grad.dtype == np.float64
    assert model[1].running_mean.dtype == np.float64
    assert model[1].num_batches_tracked.dtype == np.int64
    assert model.forward(np.zeros((2, 4))).dtype == np.float64


def test_linear_errors_name_the_problem() -> None:
    lin = Linear(4, 2, rng=0)
    with pytest.raises(ValueError, match=r"expects 4 input features .* got 5"):
        lin(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="add a batch axis"):
        lin(np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="floating-point array, got dtype uint8"):
        lin(np.zeros((3, 4), np.uint8))
    with pytest.raises(TypeError, match="float32 parameters but got float64 input"):
        lin(np.zeros((3, 4)))
    with pytest.raises(TypeError, match=r"numpy\.ndarray"):
        lin([[0.0] * 4])  # type: ignore[arg-type]
    lin(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"dout of shape \(3, 2\)"):
        lin.backward(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="positive sizes"):
        Linear(0, 2)


@pytest.mark.parametrize(
    "layer",
    [Linear(2, 2, rng=0), Flatten(), Identity(), Dropout(0.1), BatchNorm1d(2), ReLU()],
    ids=lambda m: type(m).__name__,
)
def test_backward_before_forward(layer: Module) -> None:
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        layer.backward(np.zeros((2, 2), np.float32))


def test_dropout_masks_are_reproducible_and_scaled() -> None:
    x = np.ones((200, 50), np.float32)
    a, b = Dropout(0.3, rng=7), Dropout(0.3, rng=7)
    ya, yb = a(x), b(x)
    np.testing.assert_array_equal(ya, yb)
    kept = ya != 0
    # 10,000 Bernoulli(0.7) draws: the kept share is within 0.03 of 0.7 with overwhelming odds
    assert abs(kept.mean() - 0.7) < 0.03
    np.testing.assert_allclose(ya[kept], 1 / 0.7)
    np.testing.assert_array_equal(a.backward(x), ya)  # the same mask
    assert not np.array_equal(Dropout(0.3, rng=8)(x), ya)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)


def test_linear_init_is_reproducible() -> None:
    np.testing.assert_array_equal(Linear(5, 3, rng=4).weight.data, Linear(5, 3, rng=4).weight.data)
    assert not np.array_equal(Linear(5, 3, rng=4).weight.data, Linear(5, 3, rng=5).weight.data)


def test_initialiser_statistics() -> None:
    rng = np.random.default_rng(0)
    shape = (400, 500)  # 200,000 samples: the sample std is within 1% of the truth
    assert init.kaiming_normal(shape, rng).std() == pytest.approx(math.sqrt(2 / 500), rel=0.01)
    assert init.xavier_normal(shape, rng).std() == pytest.approx(math.sqrt(2 / 900), rel=0.01)
    assert init.lecun_normal(shape, rng).std() == pytest.approx(math.sqrt(1 / 500), rel=0.01)
    w = init.xavier_uniform(shape, rng)
    bound = math.sqrt(6 / 900)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    w = init.kaiming_uniform(shape, rng, mode="fan_out")
    assert np.abs(w).max() <= math.sqrt(6 / 400)
    assert init.lecun_uniform(shape, rng).dtype == np.float32
    assert init.zeros((2, 3)).sum() == 0 and init.ones((2, 3)).sum() == 6
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        init.kaiming_normal(shape, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.xavier_normal((5,), rng)


def test_gains_match_torch() -> None:
    torch = pytest.importorskip("torch")
    for name in ("linear", "sigmoid", "tanh", "relu", "selu"):
        assert init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", 0.2)
    )


def test_parameter_keeps_data_and_grad_alike() -> None:
    p = Parameter(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert p.grad.shape == p.shape and p.grad.dtype == np.float32
    with pytest.raises(TypeError, match="floating-point"):
        Parameter(np.arange(3))


def test_module_subclass_must_call_super_init() -> None:
    class Broken(Module):
        def __init__(self) -> None:
            self.w = Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match="must call super"):
        Broken()


def test_sequential_backward_params_skips_what_the_data_never_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)
    model = Sequential(
        Flatten(),
        Linear(12, 5, rng=rng, dtype=np.float64),
        ReLU(),
        Linear(5, 3, rng=rng, dtype=np.float64),
    )
    x = rng.standard_normal((4, 3, 4))
    dout = rng.standard_normal((4, 3))
    model.forward(x)
    model.backward(dout)
    expected = {name: p.grad.copy() for name, p in model.named_parameters()}
    model.zero_grad()
    calls: list[str] = []

    def spy(module: Module, method: str) -> None:
        original = getattr(module, method)

        def recorded(d: np.ndarray) -> np.ndarray | None:
            calls.append(f"{type(module).__name__}.{method}")
            return original(d)

        monkeypatch.setattr(module, method, recorded)

    for module in model:
        spy(module, "backward")
        spy(module, "backward_params")
    assert model.backward_params(dout) is None
    # Flatten (no parameters, before the first layer) runs no backward at all, and
    # the first Linear computes no input gradient.
    assert calls == ["Linear.backward", "ReLU.backward", "Linear.backward_params"]
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, expected[name], rtol=1e-14, err_msg=name)


def test_backward_params_of_a_model_without_parameters_does_nothing() -> None:
    model = Sequential(Flatten(), ReLU())
    model.forward(np.ones((2, 2, 2)))
    assert model.backward_params(np.ones((2, 4))) is None


@pytest.mark.parametrize(
    "use",
    [
        lambda x, p: x * p,  # the first natural attempt
        lambda x, p: p * x,
        lambda x, p: x @ p,
        lambda x, p: p + 1.0,
        lambda x, p: -p,
        lambda x, p: np.exp(p),
        lambda x, p: np.dot(x, p),
        lambda x, p: np.asarray(p),
        lambda x, p: p[0],
        lambda x, p: float(p),
    ],
)
def test_a_parameter_in_arithmetic_names_data(use) -> None:  # type: ignore[no-untyped-def]
    p = Parameter(np.ones(3))
    with pytest.raises(
        TypeError, match=r"shape \(3,\): a Parameter is not an array; use .*'\.data'"
    ):
        use(np.ones(3), p)
    assert np.array_equal(p.data, np.ones(3))  # unchanged by the failed attempt
    p.data += 1.0  # arithmetic on .data and .grad stays plain NumPy
    p.grad += p.data
    assert np.array_equal(p.grad, 2 * np.ones(3))


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (lambda: [Parameter(np.ones(2)), Parameter(np.ones(2))], "a list of Parameters"),
        (lambda: (Linear(2, 2, rng=0), ReLU()), "a tuple of Modules"),
        (
            lambda: {"w": Parameter(np.ones(2)), "fc": Linear(2, 2, rng=0)},
            "a dict of Parameters and Modules",
        ),
    ],
    ids=["list", "tuple", "dict"],
)
def test_parameters_hidden_in_a_container_are_refused(value, what) -> None:  # type: ignore[no-untyped-def]
    """A list of layers is the first thing many learners write; unregistered, its
    weights were left out of parameters(), gradcheck ("passed") and save."""

    class Hidden(Module):
        def __init__(self) -> None:
            super().__init__()
            self.parts = value()

    with pytest.raises(TypeError, match=f"Hidden.parts: {what} is not registered"):
        Hidden()


def test_containers_of_plain_values_are_still_attributes() -> None:
    layer = Linear(2, 2, rng=0)
    layer.sizes = [2, 2]
    layer.cache = (np.ones(2), None)
    layer.options = {"a": 1}
    assert layer.sizes == [2, 2] and layer.options == {"a": 1}
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
