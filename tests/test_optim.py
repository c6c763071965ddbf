"""Optimizers: 25 steps side by side with PyTorch on a small network, state, validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from handgrad.nn.layers import Linear
from handgrad.nn.module import Sequential
from handgrad.nn.parameter import Parameter
from handgrad.optim import SGD, Adagrad, Adam, AdamW, Lion, Optimizer, RMSprop

STEPS = 25
# float64: the update maths is the same, only summation order differs.
# float32: 25 steps of single-precision rounding compound, and Adam's normalised
# update amplifies relative error where sqrt(v) is small.
TOL = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}

CONFIGS: list[tuple[str, Callable[..., Optimizer], str, dict[str, Any]]] = [
    ("sgd", SGD, "SGD", dict(lr=0.1)),
    ("sgd-momentum", SGD, "SGD", dict(lr=0.05, momentum=0.9)),
    ("sgd-dampening-wd", SGD, "SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("sgd-nesterov", SGD, "SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd-maximize", SGD, "SGD", dict(lr=0.01, momentum=0.5, maximize=True)),
    ("adam", Adam, "Adam", dict(lr=0.01)),
    ("adam-amsgrad-wd", Adam, "Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.05)),
    ("adam-betas", Adam, "Adam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6)),
    ("adamw", AdamW, "AdamW", dict(lr=0.01)),
    ("adamw-amsgrad", AdamW, "AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("rmsprop", RMSprop, "RMSprop", dict(lr=0.01)),
    (
        "rmsprop-centered-momentum",
        RMSprop,
        "RMSprop",
        dict(lr=0.005, centered=True, momentum=0.9, weight_decay=0.01),
    ),
    ("adagrad", Adagrad, "Adagrad", dict(lr=0.1)),
    (
        "adagrad-decay",
        Adagrad,
        "Adagrad",
        dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
    ),
]


def _net(dtype: type) -> Sequential:
    rng = np.random.default_rng(0)
    return Sequential(Linear(5, 8, rng=rng, dtype=dtype), Linear(8, 3, rng=rng, dtype=dtype))


def _torch_net(model: Sequential) -> Any:
    import torch

    dtype = torch.float64 if model[0].weight.dtype == np.float64 else torch.float32
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Linear(8, 3)).to(dtype)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.from_numpy(dict(model.named_parameters())[name].data))
    return net


def _backward(model: Sequential, x: np.ndarray, y: np.ndarray) -> None:
    """A tanh between the layers and an MSE loss, differentiated by hand here."""
    h = model[0].forward(x)
    a = np.tanh(h)
    out = model[1].forward(a)
    dout = 2 * (out - y) / out.size
    da = model[1].backward(dout)
    model[0].backward(da * (1 - a * a))


def _torch_loss(net: Any, x: Any, y: Any) -> Any:
    import torch

    return ((net[1](torch.tanh(net[0](x))) - y) ** 2).mean()


def _lion_reference(params: list[Any], lr: float, betas: tuple[float, float], wd: float) -> Any:
    """PyTorch has no Lion: the paper's Algorithm 2 written with torch ops."""
    import torch

    state = [torch.zeros_like(p) for p in params]

    def step() -> None:
        with torch.no_grad():
            for p, m in zip(params, state, strict=True):
                c = betas[0] * m + (1 - betas[0]) * p.grad
                p.mul_(1 - lr * wd).add_(torch.sign(c), alpha=-lr)
                m.mul_(betas[1]).add_(p.grad, alpha=1 - betas[1])

    return step


def _side_by_side(
    make: Callable[[list[Parameter]], Optimizer], torch_step: Callable[[Any], Any], dtype: type
) -> None:
    import torch

    rng = np.random.default_rng(1)
    model = _net(dtype)
    net = _torch_net(model)
    opt = make(list(model.parameters()))
    step = torch_step(net)
    for i in range(STEPS):
        x = rng.standard_normal((16, 5)).astype(dtype)
        y = rng.standard_normal((16, 3)).astype(dtype)
        opt.zero_grad()
        _backward(model, x, y)
        opt.step()
        for p in net.parameters():
            p.grad = None
        _torch_loss(net, torch.from_numpy(x), torch.from_numpy(y)).backward()
        step()
        if i % 5 == 4 or i == STEPS - 1:
            theirs = dict(net.named_parameters())
            for name, p in model.named_parameters():
                assert p.data.dtype == dtype
                np.testing.assert_allclose(
                    p.data,
                    theirs[name].detach().numpy(),
                    **TOL[dtype],
                    err_msg=f"{name} after {i + 1} steps",
                )


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(
    ("name", "cls", "torch_name", "kwargs"), CONFIGS, ids=[c[0] for c in CONFIGS]
)
def test_matches_torch_over_25_steps(
    name: str, cls: Any, torch_name: str, kwargs: dict[str, Any], dtype: type
) -> None:
    torch = pytest.importorskip("torch")

    def torch_step(net: Any) -> Any:
        return getattr(torch.optim, torch_name)(net.parameters(), **kwargs).step

    _side_by_side(lambda params: cls(params, **kwargs), torch_step, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lion_matches_the_papers_algorithm(dtype: type, wd: float) -> None:
    pytest.importorskip("torch")
    _side_by_side(
        lambda params: Lion(params, lr=0.01, betas=(0.9, 0.99), weight_decay=wd),
        lambda net: _lion_reference(list(net.parameters()), 0.01, (0.9, 0.99), wd),
        dtype,
    )


def test_param_groups_with_their_own_lr_match_torch() -> None:
    torch = pytest.importorskip("torch")

    def make(params: list[Parameter]) -> Optimizer:
        return Adam([{"params": params[:2], "lr": 0.05}, {"params": params[2:]}], lr=0.01)

    def torch_step(net: Any) -> Any:
        ps = list(net.parameters())
        return torch.optim.Adam([{"params": ps[:2], "lr": 0.05}, {"params": ps[2:]}], lr=0.01).step

    _side_by_side(make, torch_step, np.float64)


def _train(opt: Optimizer, model: Sequential, steps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    dtype = model[0].weight.dtype
    for _ in range(steps):
        opt.zero_grad()
        _backward(
            model,
            rng.standard_normal((8, 5)).astype(dtype),
            rng.standard_normal((8, 3)).astype(dtype),
        )
        opt.step()


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, RMSprop, Adagrad, Lion])
def test_state_dict_round_trip_resumes_bit_for_bit(cls: Any) -> None:
    kwargs = {"lr": 0.01, "momentum": 0.9} if cls in (SGD, RMSprop) else {"lr": 0.01}
    whole = _net(np.float64)
    opt = cls(whole.parameters(), **kwargs)
    _train(opt, whole, 5, seed=1)
    _train(opt, whole, 5, seed=2)

    first = _net(np.float64)
    opt1 = cls(first.parameters(), **kwargs)
    _train(opt1, first, 5, seed=1)
    saved, weights = opt1.state_dict(), first.state_dict()
    _train(opt1, first, 1, seed=9)  # moving on must not touch the saved copy
    resumed = _net(np.float64)
    resumed.load_state_dict(weights)
    opt2 = cls(resumed.parameters(), **kwargs)
    opt2.load_state_dict(saved)
    _train(opt2, resumed, 5, seed=2)
    for k, v in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[k], v)


def test_state_is_keyed_by_parameter_objects() -> None:
    model = _net(np.float32)
    opt = Adam(model.parameters())
    _train(opt, model, 1, seed=0)
    assert set(opt.state) == set(model.parameters())
    assert all(isinstance(k, Parameter) for k in opt.state)
    assert opt.state[model[0].weight]["exp_avg"].dtype == np.float32


def test_load_state_dict_checks_the_layout() -> None:
    model = _net(np.float64)
    opt = Adam(model.parameters())
    _train(opt, model, 1, seed=0)
    saved = opt.state_dict()
    other = Sequential(Linear(5, 8, rng=0, dtype=np.float64))
    with pytest.raises(ValueError, match="has 4 parameters in the state dict but 2 here"):
        Adam(other.parameters()).load_state_dict(saved)
    wrong = Sequential(Linear(5, 8, rng=0, dtype=np.float64), Linear(8, 4, rng=0, dtype=np.float64))
    with pytest.raises(ValueError, match="shape"):
        Adam(wrong.parameters()).load_state_dict(saved)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda ps: SGD(ps, lr=0.0), "learning rate must be a positive number"),
        (lambda ps: Adam(ps, lr=-1e-3), "learning rate must be a positive number"),
        (lambda ps: Adam(ps, lr=float("nan")), "learning rate"),
        (lambda ps: Adam(ps, betas=(0.9, 1.0)), r"betas must be two numbers in \[0, 1\)"),
        (lambda ps: AdamW(ps, betas=(-0.1, 0.9)), "betas"),
        (lambda ps: Adam(ps, eps=-1.0), "eps must be >= 0"),
        (lambda ps: SGD(ps, lr=0.1, momentum=-0.5), "momentum must be >= 0"),
        (lambda ps: SGD(ps, lr=0.1, nesterov=True), "Nesterov momentum requires momentum > 0"),
        (lambda ps: SGD(ps, lr=0.1, weight_decay=-1), "weight_decay must be >= 0"),
        (lambda ps: Lion(ps, betas=(0.9, 1.5)), "betas"),
        (lambda ps: SGD([], lr=0.1), "empty parameter list"),
        (lambda ps: SGD(ps + ps[:1], lr=0.1), "more than once"),
        (lambda ps: SGD([np.zeros(3)], lr=0.1), "expects handgrad Parameters"),
    ],
)
def test_invalid_hyperparameters_are_named(build: Any, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        build(list(_net(np.float32).parameters()))


def test_zero_grad_and_grads_left_untouched_by_step() -> None:
    model = _net(np.float64)
    opt = AdamW(model.parameters(), weight_decay=0.1)
    _backward(model, np.ones((2, 5)), np.zeros((2, 3)))
    grads = [p.grad.copy() for p in model.parameters()]
    opt.step()
    for p, g in zip(model.parameters(), grads, strict=True):
        np.testing.assert_array_equal(p.grad, g)
    opt.zero_grad()
    assert all(not p.grad.any() for p in model.parameters())


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "lion"])
def test_numpy_scalar_hyperparameters_update_as_python_numbers(name: str) -> None:
    # lr from np.logspace is a numpy.float64: it must not turn a float32 update
    # into float64 arithmetic (other numbers than PyTorch's, and slower)
    from handgrad.recipes import make_optimizer

    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((6, 5)).astype(np.float32) for _ in range(3)]
    results = []
    for lr in (0.01, np.float64(0.01)):
        p = Parameter(np.random.default_rng(1).standard_normal((6, 5)).astype(np.float32))
        module = Linear(5, 6, rng=0)
        module.weight = p
        opt = make_optimizer(name, module, lr)
        for group in opt.param_groups:
            group["lr"] = lr
        for g in grads:
            p.grad[...] = g
            opt.step()
        results.append(p.data.copy())
    assert results[0].dtype == np.float32
    np.testing.assert_array_equal(results[0], results[1])
