"""The 2-D modules beyond the registry: errors, dtypes, shapes, saving, modes, channel dropout.

Gradients and PyTorch parity of ``Conv2d``, the pools, ``BatchNorm2d`` and
``Dropout2d`` run from ``tests/cases/``; this file checks what those cannot:
the error messages, output shapes over a grid of arguments, a saved CNN, the
running statistics, the channel masks and the work ``backward_params`` skips.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import handgrad
from handgrad.nn import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout2d,
    Flatten,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    Sequential,
)
from handgrad.nn import conv as conv_module
from handgrad.nn._spatial import output_size

torch: Any
try:
    import torch
except ImportError:  # the shape grid falls back to the formula
    torch = None

X32 = np.random.default_rng(0).standard_normal((2, 3, 6, 5)).astype(np.float32)


# -- errors name what was expected and what came ------------------------------------


def _forward(module: Module, shape: tuple[int, ...], dtype: type = np.float32) -> Callable[[], Any]:
    return lambda: module.forward(np.zeros(shape, dtype))


ERRORS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    (
        "conv-3d-input",
        _forward(Conv2d(3, 4, 3, rng=0), (3, 6, 6)),
        ValueError,
        r"Conv2d\.forward expects a 4-D input \(N, C, H, W\), got 3-D shape \(3, 6, 6\)",
    ),
    (
        "conv-channels",
        _forward(Conv2d(3, 4, 3, rng=0), (2, 5, 6, 6)),
        ValueError,
        r"expects 3 input channels .*got 5 \(input shape \(2, 5, 6, 6\)\)",
    ),
    (
        "conv-kernel-too-large",
        _forward(Conv2d(1, 1, 5, padding=1, rng=0), (1, 1, 2, 6)),
        ValueError,
        r"kernel spans 5x5 pixels .* padded input is only 4x8 \(input 2x6",
    ),
    (
        "conv-dilated-too-large",
        _forward(Conv2d(1, 1, 3, dilation=(1, 3), rng=0), (1, 1, 6, 6)),
        ValueError,
        r"kernel spans 3x7 pixels .* padded input is only 6x6",
    ),
    (
        "conv-dtype",
        _forward(Conv2d(3, 4, 3, rng=0), (2, 3, 6, 6), np.float64),
        TypeError,
        r"Conv2d\.forward has float32 parameters but got float64 input",
    ),
    (
        "conv-integer-input",
        lambda: Conv2d(1, 1, 1, rng=0).forward(np.zeros((1, 1, 2, 2), np.uint8)),
        TypeError,
        r"floating-point array, got dtype uint8",
    ),
    ("conv-kernel-0", lambda: Conv2d(3, 4, 0), ValueError, r"kernel_size must be >= 1, got 0"),
    (
        "conv-kernel-negative",
        lambda: Conv2d(3, 4, (3, -1)),
        ValueError,
        r"kernel_size must be >= 1, got \(3, -1\)",
    ),
    ("conv-stride-0", lambda: Conv2d(3, 4, 3, stride=0), ValueError, r"stride must be >= 1, got 0"),
    (
        "conv-out-channels-0",
        lambda: Conv2d(3, 0, 3),
        ValueError,
        r"out_channels must be a positive int, got 0",
    ),
    (
        "conv-in-channels-negative",
        lambda: Conv2d(-1, 4, 3),
        ValueError,
        r"in_channels must be a positive int, got -1",
    ),
    (
        "conv-padding-negative",
        lambda: Conv2d(3, 4, 3, padding=(1, -1)),
        ValueError,
        r"padding must be >= 0, got \(1, -1\)",
    ),
    (
        "conv-padding-word",
        lambda: Conv2d(3, 4, 3, padding="full"),
        ValueError,
        r"padding must be an int, a pair, 'valid' or 'same', got 'full'",
    ),
    (
        "conv-same-stride-2",
        lambda: Conv2d(3, 4, 3, stride=2, padding="same"),
        ValueError,
        r"padding='same' needs stride 1 \(as in PyTorch\), got stride \(2, 2\)",
    ),
    (
        "conv-groups-in",
        lambda: Conv2d(3, 4, 3, groups=2),
        ValueError,
        r"in_channels \(3\) and out_channels \(4\) must both be divisible by groups \(2\)",
    ),
    (
        "conv-groups-out",
        lambda: Conv2d(4, 3, 3, groups=2),
        ValueError,
        r"in_channels \(4\) and out_channels \(3\) must both be divisible by groups \(2\)",
    ),
    (
        "maxpool-padding",
        lambda: MaxPool2d(3, padding=2),
        ValueError,
        r"MaxPool2d: padding \(2, 2\) must be at most half the kernel size \(3, 3\)",
    ),
    (
        "avgpool-padding",
        lambda: AvgPool2d((2, 4), padding=(1, 3)),
        ValueError,
        r"AvgPool2d: padding \(1, 3\) must be at most half the kernel size \(2, 4\)",
    ),
    (
        "maxpool-dilated-padding",
        lambda: MaxPool2d(3, stride=1, padding=2, dilation=2),
        ValueError,
        r"must be at most half the kernel size \(3, 3\) \(as in PyTorch\)",
    ),
    (
        "conv-groups-bool",
        lambda: Conv2d(4, 4, 3, groups=True),
        ValueError,
        r"groups must be a positive int",
    ),
    (
        "maxpool-window-too-large",
        _forward(MaxPool2d(4), (1, 1, 3, 8)),
        ValueError,
        r"a 4x4 window .* does not fit the padded input 3x8",
    ),
    (
        "adaptive-size-0",
        lambda: AdaptiveAvgPool2d((2, 0)),
        ValueError,
        r"output_size must be a positive int .* got \(2, 0\)",
    ),
    (
        "batchnorm2d-channels",
        _forward(BatchNorm2d(3), (2, 4, 5, 5)),
        ValueError,
        r"BatchNorm2d\.forward expects 3 input channels .*got 4",
    ),
    (
        "batchnorm2d-2d-input",
        _forward(BatchNorm2d(3), (2, 3)),
        ValueError,
        r"BatchNorm2d\.forward expects a 4-D input \(N, C, H, W\), got 2-D",
    ),
    (
        "batchnorm2d-one-value",
        _forward(BatchNorm2d(3), (1, 3, 1, 1)),
        ValueError,
        r"more than 1 value per channel when training, got input of shape \(1, 3, 1, 1\)",
    ),
    (
        "dropout2d-3d-input",
        _forward(Dropout2d(0.5, rng=0), (3, 4, 4)),
        ValueError,
        r"Dropout2d\.forward expects a 4-D input \(N, C, H, W\), got 3-D",
    ),
    (
        # 2 channels x 3 x 3 = 18 features reach a Linear that wants 10
        "flatten-linear-mismatch",
        _forward(Sequential(Conv2d(1, 2, 3, rng=0), Flatten(), Linear(10, 3, rng=0)), (2, 1, 5, 5)),
        ValueError,
        r"Linear\.forward expects 10 input features \(last axis\), got 18",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_errors_say_what_was_expected_and_what_came(
    call: Callable[[], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        call()


NEW_MODULES: list[tuple[str, Callable[[], Module]]] = [
    ("Conv2d", lambda: Conv2d(3, 4, 3, padding=1, rng=0)),
    ("Conv2d-groups", lambda: Conv2d(3, 6, (2, 3), stride=(2, 1), groups=3, rng=0)),
    ("MaxPool2d", lambda: MaxPool2d(2)),
    ("AvgPool2d", lambda: AvgPool2d(3, stride=2, padding=1, count_include_pad=False)),
    ("AdaptiveAvgPool2d", lambda: AdaptiveAvgPool2d((2, 3))),
    ("BatchNorm2d", lambda: BatchNorm2d(3)),
    ("Dropout2d", lambda: Dropout2d(0.5, rng=0)),
]
NEW_IDS = [name for name, _ in NEW_MODULES]


@pytest.mark.parametrize("make", [m for _, m in NEW_MODULES], ids=NEW_IDS)
def test_backward_before_forward_is_a_runtime_error(make: Callable[[], Module]) -> None:
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        make().backward(np.zeros((2, 3, 6, 5), np.float32))


def test_maxpool_backward_after_an_eval_forward_is_a_runtime_error() -> None:
    pool = MaxPool2d(2).eval()
    out = pool.forward(X32)
    with pytest.raises(RuntimeError, match=r"after a forward in eval mode.*model\.train\(\)"):
        pool.backward(np.ones_like(out))
    pool.train().forward(X32)  # a training forward makes backward possible again
    assert pool.backward(np.ones_like(out)).shape == X32.shape


# -- dtype ------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("make", [m for _, m in NEW_MODULES], ids=NEW_IDS)
def test_float32_in_float32_out(make: Callable[[], Module], training: bool) -> None:
    module = make().train(training)
    if training or not isinstance(module, MaxPool2d):
        out = module.forward(X32)
        assert out.dtype == np.float32
        dx = module.backward(np.ones_like(out))
        assert dx.dtype == np.float32 and dx.shape == X32.shape
    else:
        assert module.forward(X32).dtype == np.float32
    for name, p in module.named_parameters():
        assert p.data.dtype == np.float32 and p.grad.dtype == np.float32, name
    for name, b in module.named_buffers():
        assert b.dtype in (np.float32, np.int64), name


def test_float64_model_keeps_float64() -> None:
    model = Sequential(Conv2d(3, 4, 3, rng=0), BatchNorm2d(4), MaxPool2d(2)).to(np.float64)
    out = model.forward(X32.astype(np.float64))
    assert out.dtype == np.float64
    assert model.backward(np.ones_like(out)).dtype == np.float64
    assert all(p.grad.dtype == np.float64 for p in model.parameters())


# -- output shapes ----------------------------------------------------------------------

INPUTS = [(1, 2, 5, 5), (2, 2, 7, 4), (1, 2, 3, 8)]


def _expected(
    torch_module: Callable[[], Any], formula: Callable[[], tuple[int, ...]], shape: Any
) -> Any:
    """The output shape PyTorch gives (None if it refuses), or the formula without torch."""
    if torch is None:
        return formula()
    try:
        with torch.no_grad():
            return tuple(torch_module()(torch.zeros(shape)).shape)
    except RuntimeError:
        return None


def _ours(module: Module, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    try:
        return module.forward(np.zeros(shape, np.float32)).shape
    except ValueError as exc:
        assert "does not fit" in str(exc) or "kernel spans" in str(exc)
        return None


def _fits(out: tuple[int, ...]) -> tuple[int, ...] | None:
    return out if min(out) >= 1 else None


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_conv_output_shapes_match_torch() -> None:
    grid: Any = itertools.product(
        [1, 3, (2, 3)], [1, 2, (2, 1)], [0, 1, (1, 0), "same", "valid"], [1, 2], INPUTS
    )
    checked = 0
    for kernel, stride, padding, dilation, shape in grid:
        if padding == "same" and stride != 1:
            continue
        conv = Conv2d(2, 3, kernel, stride, padding, dilation, rng=0)

        def formula(conv: Conv2d = conv, shape: Any = shape) -> Any:
            t, b, l, r = conv._pads
            (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
            oh = output_size(shape[2], kh, sh, t + b, dh)
            ow = output_size(shape[3], kw, sw, l + r, dw)
            return _fits((shape[0], 3, oh, ow))

        def twin(k: Any = kernel, s: Any = stride, p: Any = padding, d: Any = dilation) -> Any:
            return torch.nn.Conv2d(2, 3, k, s, p, d)

        expected = _expected(twin, formula, shape)
        assert _ours(conv, shape) == expected, (kernel, stride, padding, dilation, shape)
        checked += expected is not None
    assert checked > 100  # most configurations fit: the grid is not all errors


def test_pool_output_shapes_match_torch() -> None:
    checked = 0
    grid: Any = itertools.product([2, 3, (3, 2)], [None, 1, 2, (1, 2)], [0, 1], [1, 2], INPUTS)
    for kernel, stride, padding, dilation, shape in grid:
        for kind in ("max", "avg"):
            if kind == "avg" and dilation != 1:
                continue
            if kind == "max":
                module: Module = MaxPool2d(kernel, stride, padding, dilation)
            else:
                module = AvgPool2d(kernel, stride, padding)

            def formula(m: Any = module, shape: Any = shape) -> Any:
                oh = output_size(
                    shape[2], m.kernel_size[0], m.stride[0], 2 * m.padding[0], m.dilation[0]
                )
                ow = output_size(
                    shape[3], m.kernel_size[1], m.stride[1], 2 * m.padding[1], m.dilation[1]
                )
                return _fits((*shape[:2], oh, ow))

            def twin(
                kind: str = kind,
                k: Any = kernel,
                s: Any = stride,
                p: Any = padding,
                d: Any = dilation,
            ) -> Any:
                if kind == "max":
                    return torch.nn.MaxPool2d(k, s, p, d)
                return torch.nn.AvgPool2d(k, s, p)

            expected = _expected(twin, formula, shape)
            config = (kind, kernel, stride, padding, dilation, shape)
            assert _ours(module, shape) == expected, config
            checked += expected is not None
    assert checked > 100


@pytest.mark.parametrize("size", [1, 3, (2, 5), (None, 2), (4, None), (9, 9)], ids=str)
def test_adaptive_output_shapes_match_torch(size: Any) -> None:
    for shape in INPUTS:
        pair = size if isinstance(size, tuple) else (size, size)
        formula = (*shape[:2], pair[0] or shape[2], pair[1] or shape[3])

        def twin() -> Any:
            return torch.nn.AdaptiveAvgPool2d(size)

        def by_formula(formula: tuple[int, ...] = formula) -> tuple[int, ...]:
            return formula

        expected = _expected(twin, by_formula, shape)
        assert AdaptiveAvgPool2d(size).forward(np.zeros(shape, np.float32)).shape == expected


# -- save / load ------------------------------------------------------------------------


def _cnn() -> Sequential:
    return Sequential(
        Conv2d(3, 4, (3, 2), padding="same", bias=False, rng=0),
        BatchNorm2d(4, momentum=0.2),
        ReLU(),
        Dropout2d(0.25, rng=1),
        MaxPool2d((2, 2), stride=(2, 1)),
        Conv2d(4, 6, 3, stride=(1, 2), padding=(1, 0), groups=2, rng=2),  # (N, 6, 4, 3)
        AvgPool2d(2, stride=1, padding=1, count_include_pad=False),  # (N, 6, 5, 4)
        AdaptiveAvgPool2d((None, 2)),  # (N, 6, 5, 2)
        Flatten(),
        Linear(60, 3, rng=3),
    )


def test_saved_cnn_predicts_the_same_after_loading(tmp_path: Path) -> None:
    model = _cnn()
    rng = np.random.default_rng(0)
    for _ in range(3):  # move the running statistics off their defaults
        model.forward(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    model.eval()
    path = handgrad.save(model, tmp_path / "cnn.npz")
    loaded = handgrad.load(path)
    assert isinstance(loaded, Sequential)
    assert repr(loaded) == repr(model)
    first = loaded[0]
    assert isinstance(first, Conv2d)
    assert first.padding == "same" and first.kernel_size == (3, 2) and first.bias is None
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(loaded_state[key], value, err_msg=key)
    x = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)
    out = loaded.eval().forward(x)
    assert out.shape == (5, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, model.forward(x))

    loaded.to(np.float64)
    out64 = loaded.forward(x.astype(np.float64))
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, out, rtol=1e-4, atol=1e-5)
    assert all(p.data.dtype == np.float64 for p in loaded.parameters())


# -- batch norm modes -------------------------------------------------------------------


def _bn_formula(bn: BatchNorm2d, x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    assert bn.weight is not None and bn.bias is not None
    c = (1, -1, 1, 1)
    xhat = (x - mean.reshape(c)) / np.sqrt(var.reshape(c) + bn.eps)
    return xhat * bn.weight.data.reshape(c) + bn.bias.data.reshape(c)


def test_batchnorm2d_eval_uses_the_running_statistics_and_train_the_batch() -> None:
    rng = np.random.default_rng(0)
    bn = BatchNorm2d(3, momentum=0.25, dtype=np.float64)
    assert bn.weight is not None and bn.bias is not None
    bn.weight.data = rng.uniform(0.5, 2.0, 3)
    bn.bias.data = rng.standard_normal(3)
    x = rng.standard_normal((4, 3, 5, 6)) * 3 + 2

    # train: batch statistics, running ones move by the momentum (unbiased variance)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(bn.forward(x), _bn_formula(bn, x, mean, var), rtol=1e-12)
    m = 4 * 5 * 6
    np.testing.assert_allclose(bn.running_mean, 0.25 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.75 + 0.25 * var * m / (m - 1), rtol=1e-12)
    assert int(bn.num_batches_tracked) == 1

    # eval: the running statistics, which stay put
    running = (bn.running_mean.copy(), bn.running_var.copy())
    bn.eval()
    y = rng.standard_normal((2, 3, 4, 4))
    out = bn.forward(y)
    np.testing.assert_allclose(out, _bn_formula(bn, y, *running), rtol=1e-12)
    assert not np.allclose(out, _bn_formula(bn, y, y.mean(axis=(0, 2, 3)), y.var(axis=(0, 2, 3))))
    dout = rng.standard_normal(out.shape)
    scale = (bn.weight.data / np.sqrt(running[1] + bn.eps)).reshape(1, -1, 1, 1)
    np.testing.assert_allclose(bn.backward(dout), dout * scale, rtol=1e-12)
    np.testing.assert_array_equal(bn.running_mean, running[0])
    np.testing.assert_array_equal(bn.running_var, running[1])
    assert int(bn.num_batches_tracked) == 1

    # and back to training: batch statistics again
    bn.train()
    out = bn.forward(y)
    np.testing.assert_allclose(
        out, _bn_formula(bn, y, y.mean(axis=(0, 2, 3)), y.var(axis=(0, 2, 3))), rtol=1e-12
    )
    assert int(bn.num_batches_tracked) == 2


# -- channel dropout --------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_dropout2d_zeroes_whole_channels(p: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, (16, 8, 3, 4)) * rng.choice([-1, 1], (16, 8, 3, 4))
    drop = Dropout2d(p, rng=0)
    out = drop.forward(x)
    dout = rng.standard_normal(x.shape)
    dx = drop.backward(dout)
    zero = np.all(out == 0, axis=(2, 3))  # (N, C)
    kept = ~zero
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-14)
    np.testing.assert_array_equal(dx[zero], 0.0)
    np.testing.assert_allclose(dx[kept], dout[kept] / (1 - p), rtol=1e-14)
    assert abs(zero.mean() - p) < 0.12  # 128 channels, so the rate is near p
    assert 0 < zero.sum() < zero.size


def test_dropout2d_is_the_identity_in_eval_mode_and_repeats_with_a_seed() -> None:
    x = np.random.default_rng(1).standard_normal((4, 6, 3, 3)).astype(np.float32)
    drop = Dropout2d(0.5, rng=0).eval()
    np.testing.assert_array_equal(drop.forward(x), x)
    np.testing.assert_array_equal(drop.backward(x * 2), x * 2)
    a, b, c = (Dropout2d(0.5, rng=seed) for seed in (7, 7, 8))
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    np.testing.assert_array_equal(a.forward(x), b.forward(x))  # and the next mask too
    assert not np.array_equal(a.forward(x), c.forward(x))


# -- backward_params --------------------------------------------------------------------


def test_backward_params_skips_the_first_conv_input_gradient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = conv_module.conv2d_data_grad

    def counting(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(args[2])  # the padded input shape whose gradient is built
        return real(*args, **kwargs)

    monkeypatch.setattr(conv_module, "conv2d_data_grad", counting)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    dout = rng.standard_normal((2, 2)).astype(np.float32)
    grads = []
    for method in ("backward", "backward_params"):
        model = Sequential(
            Conv2d(3, 4, 3, padding=1, rng=0),
            ReLU(),
            Conv2d(4, 5, 3, stride=2, rng=1),
            Flatten(),
            Linear(5 * 3 * 2, 2, rng=2),
        )
        model.forward(x)
        model.zero_grad()
        calls.clear()
        getattr(model, method)(dout)
        grads.append((list(calls), {n: p.grad.copy() for n, p in model.named_parameters()}))
    (full_calls, full), (param_calls, params) = grads
    # backward builds both input gradients; backward_params only the second conv's
    # (its input is the first conv's output, padded: none), never the data's (padded: 9x8)
    assert full_calls == [(2, 7, 6, 4), (2, 9, 8, 3)]
    assert param_calls == [(2, 7, 6, 4)]
    assert list(params) == list(full)
    for name, grad in full.items():
        np.testing.assert_array_equal(params[name], grad, err_msg=name)
