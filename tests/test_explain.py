"""``handgrad explain`` and ``handgrad.explain``: the shapes and formulas it prints, its
numeric gradient check, the structured trace, every module's formula, the 80-column
limit, the plot, the errors, and docs/explain.md against the real output."""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import handgrad
from handgrad import nn
from handgrad.cli import main
from handgrad.explain import THRESHOLD, Trace, explain, leaves, tiny_example
from handgrad.formulas import FORMULAS, LOSS_FORMULAS, Description, Step, register_formula, shape
from handgrad.nn.fused import ConvMaxPool
from handgrad.recipes import build_mlp
from handgrad.serialization import save

DOCS = Path(__file__).resolve().parents[1] / "docs" / "explain.md"
ERRORS = re.compile(r"rel\. error (< )?(\d[\d.]*e-?\d+)")
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _printed_errors(text: str) -> list[float]:
    return [float(m.group(2)) for m in ERRORS.finditer(text)]


def _lines_at_most_80(text: str) -> None:
    long = [line for line in text.splitlines() if len(line) > 80]
    assert not long, f"{len(long)} lines over 80 columns, e.g. {long[0]!r}"


def _mnist_batch(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from handgrad.data import load_mnist, to_float_images

    data = load_mnist()
    pick = np.sort(np.random.default_rng(seed).choice(len(data.x_test), n, replace=False))
    return to_float_images(data.x_test[pick], flatten=False), data.y_test[pick]


# -- the default: the reference MLP on MNIST ------------------------------------------


def test_default_mlp_prints_every_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(["explain"], capsys)
    assert code == 0, err
    for line in (
        "[1] Linear(784 -> 128)",
        "    out = x.reshape(N, -1): (64, 28, 28) -> (64, 784)",
        "    out = x W^T + b: (64, 784) @ (784, 128) + (128,) -> (64, 128)",
        "    out = max(0, x): (64, 128) -> (64, 128)",
        "    out = x W^T + b: (64, 128) @ (128, 10) + (10,) -> (64, 10)",
        "    dz = (p - Y) / N, Y = onehot(y): (64, 10) -> (64, 10)",
        "    dx = dout W: (64, 10) @ (10, 128) -> (64, 128)",
        "    dW = dout^T x: (10, 64) @ (64, 128) -> (10, 128)",
        "    db = sum_n dout: (64, 10) -> (10,)",
        "    dx = dout * (x > 0): (64, 128) -> (64, 128)",
        "    dx = dout W: (64, 128) @ (128, 784) -> (64, 784)",
        "    dW = dout^T x: (128, 64) @ (64, 784) -> (128, 784)",
        "    db = sum_n dout: (64, 128) -> (128,)",
        "    dx = dout.reshape(x.shape): (64, 784) -> (64, 28, 28)",
    ):
        assert line in out.splitlines(), line
    assert "over 20 sampled entries of 100,352 (1.weight)" in out
    assert "over all 10 entries (3.bias)" in out
    errors = _printed_errors(out)
    assert len(errors) == 5  # four parameters and the summary's largest
    assert max(errors) < 1e-6
    _lines_at_most_80(out)
    # the forward section runs in order, the backward section in reverse
    forward, backward = out.split("== backward")
    order = [forward.index(f"[{i}] ") for i in range(4)]
    assert order == sorted(order)
    order = [backward.index(f"[{i}] ") for i in range(4)]
    assert order == sorted(order, reverse=True)


def test_default_mlp_numeric_errors_below_1e6_in_float64() -> None:
    model = build_mlp(784, [128], 10, rng=np.random.default_rng(0))
    x, y = _mnist_batch()
    trace = explain(model, x, y)
    assert [p.name for p in trace.params] == ["1.weight", "1.bias", "3.weight", "3.bias"]
    assert [p.checked for p in trace.params] == [20, 20, 20, 10]
    assert all(p.kinks == 0 for p in trace.params)
    assert 0 < trace.max_rel_error < 1e-6
    assert trace.passed()
    # the check ran in float64 while the trace itself kept the model's float32
    assert trace.dtype == np.float32
    assert all(layer.out.dtype == np.float32 for layer in trace.layers)


# -- --tiny ------------------------------------------------------------------------


def test_tiny_numbers_can_be_redone_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    model, x, y = tiny_example(0)
    w1, b1 = model[0].weight.data, model[0].bias.data
    w2, b2 = model[2].weight.data, model[2].bias.data
    for a in (x, w1, b1, w2, b2):
        assert np.allclose(a * 10, np.round(a * 10), atol=1e-12)  # one decimal
    trace = explain(model, x, y)
    h_pre = x @ w1.T + b1
    assert np.abs(h_pre).min() >= 0.1 and (h_pre < 0).any()  # away from the kink
    h = np.maximum(h_pre, 0)
    z = h @ w2.T + b2
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    dz = (p - np.eye(2)[y]) / 2
    dh = (dz @ w2) * (h_pre > 0)
    np.testing.assert_allclose(trace.layers[0].out, h_pre, atol=1e-12)
    np.testing.assert_allclose(trace.layers[2].out, z, atol=1e-12)
    np.testing.assert_allclose(trace.loss.dz, dz, atol=1e-12)
    np.testing.assert_allclose(trace.layers[2].params[0].grad, dz.T @ h, atol=1e-12)
    np.testing.assert_allclose(trace.layers[1].dx, dh, atol=1e-12)
    np.testing.assert_allclose(trace.layers[0].params[0].grad, dh.T @ x, atol=1e-12)
    np.testing.assert_allclose(trace.layers[0].params[1].grad, dh.sum(axis=0), atol=1e-12)
    assert trace.loss.value == pytest.approx(-np.log(p[[0, 1], y]).mean(), abs=1e-12)
    assert all(p.checked == p.size for p in trace.params)
    assert trace.max_rel_error < 1e-6

    code, out, _ = _cli(["explain", "--tiny"], capsys)
    assert code == 0
    lines = out.splitlines()
    for line in (
        "    out = x W^T + b: (2, 2) @ (2, 3) + (3,) -> (2, 3)",
        "    out = x W^T + b: (2, 3) @ (3, 2) + (2,) -> (2, 2)",
        "    dW = dout^T x: (2, 2) @ (2, 3) -> (2, 3)",
        "    dW = dout^T x: (3, 2) @ (2, 2) -> (3, 2)",
        "    dx = dout W: (2, 3) @ (3, 2) -> (2, 2)",
        "    db = sum_n dout: (2, 3) -> (3,)",
        f"    L = {trace.loss.value:.4f}",
    ):
        assert line in lines, line
    # the matrices printed are the real ones, to the decimals shown
    for label, expected, decimals in (
        ("x", x, 1),
        ("W", w1, 1),
        ("b", b1, 1),
        ("out", h_pre, 2),
        ("x > 0", (h_pre > 0).astype(float), 0),
        ("dz", dz, 4),
    ):
        np.testing.assert_allclose(
            _printed(lines, label, expected.shape), expected, atol=10**-decimals / 2
        )
    assert max(_printed_errors(out)) < 1e-6
    _lines_at_most_80(out)


def _printed(lines: list[str], label: str, shape: tuple[int, ...]) -> np.ndarray:
    """The first matrix printed as ``label = [[...] [...]]``, as an array."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"    {label:<5} = "))
    rows = lines[start : start + (shape[0] if len(shape) == 2 else 1)]
    text = " ".join(line.split(" = ", 1)[1] if i == 0 else line for i, line in enumerate(rows))
    return np.array([float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text)]).reshape(shape)


def test_tiny_seeds_differ_and_repeat() -> None:
    a, b, c = tiny_example(0), tiny_example(0), tiny_example(3)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0][0].weight.data, b[0][0].weight.data)
    assert not np.array_equal(a[0][0].weight.data, c[0][0].weight.data)


# -- the structured trace -------------------------------------------------------------


def _small_net(rng: np.random.Generator) -> nn.Sequential:
    f64 = np.float64
    return nn.Sequential(
        nn.Linear(5, 6, rng=rng, dtype=f64),
        nn.BatchNorm1d(6, dtype=f64),
        nn.Tanh(),
        nn.Dropout(0.3, rng=rng),
        nn.Sequential(nn.Linear(6, 4, rng=rng, dtype=f64), nn.ReLU()),
        nn.Linear(4, 3, rng=rng, dtype=f64),
        nn.Sigmoid(),
    )


def test_trace_fields_chain_and_leave_the_model_alone(rng: np.random.Generator) -> None:
    model = _small_net(np.random.default_rng(7))
    x = rng.standard_normal((8, 5)) * 3
    y = rng.random((8, 3))
    before = model.state_dict()
    dropout_state = model[3].rng.bit_generator.state
    trace = explain(model, x, y, nn.MSELoss())
    # nested Sequentials are opened up; names are the paths of state_dict
    assert [layer.name for layer in trace.layers] == ["0", "1", "2", "3", "4.0", "4.1", "5", "6"]
    assert [layer.module for layer in trace.layers] == [m for _, m in leaves(model)]
    assert trace.layers[4].module is model[4][0]
    assert [layer.output_shape for layer in trace.layers] == [(8, 6)] * 4 + [(8, 4)] * 2 + [
        (8, 3)
    ] * 2
    for before_layer, after_layer in zip(trace.layers, trace.layers[1:], strict=False):
        np.testing.assert_array_equal(before_layer.out, after_layer.x)
        np.testing.assert_array_equal(before_layer.dout, after_layer.dx)
    np.testing.assert_array_equal(trace.layers[-1].dout, trace.loss.dz)
    np.testing.assert_allclose(trace.loss.dz, 2 * (trace.layers[-1].out - y) / y.size)
    assert trace.loss.value == pytest.approx(float(np.mean((trace.layers[-1].out - y) ** 2)))
    assert [p.symbol for p in trace.params] == ["dW", "db", "dgamma", "dbeta"] + ["dW", "db"] * 2
    assert trace.layers[1].params[0].name == "1.weight"
    stats = trace.layers[2].out_stats
    out = trace.layers[2].out
    assert (stats.mean, stats.std, stats.max_abs) == pytest.approx(
        (out.mean(), out.std(), np.abs(out).max())
    )
    tanh = trace.layers[2]
    assert tanh.saturated_fraction == pytest.approx(np.mean(np.abs(tanh.out) > 0.99))
    relu = trace.layers[5]
    assert relu.zero_fraction == pytest.approx(np.mean(relu.out == 0))
    assert relu.dead_units == int(np.all(relu.out == 0, axis=0).sum()) and relu.units == 4
    sigmoid = trace.layers[7]
    s = sigmoid.out
    assert sigmoid.saturated_fraction == pytest.approx(np.mean((s < 0.01) | (s > 0.99)))
    # the gradients are those of one forward and backward pass of the model itself
    twin = copy.deepcopy(model)
    loss = nn.MSELoss()
    loss(twin(x), y)
    twin.backward(loss.backward())
    for record, (_, param) in zip(trace.params, twin.named_parameters(), strict=True):
        np.testing.assert_allclose(record.grad, param.grad, rtol=1e-12, atol=1e-15)
    # dropout in training mode replays its masks in the numeric check
    assert trace.training and trace.max_rel_error < 1e-6
    assert all(p.rel_error is not None for p in trace.params)
    # the model is untouched: weights, running statistics, gradients, dropout's generator
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(not p.grad.any() for p in model.parameters())
    assert model[3].rng.bit_generator.state == dropout_state


def test_evaluation_mode_formulas(rng: np.random.Generator) -> None:
    model = _small_net(rng).eval()
    trace = explain(model, rng.standard_normal((4, 5)), rng.random((4, 3)), nn.MSELoss())
    assert not trace.training
    assert trace.layers[1].description.title == "BatchNorm1d(6), evaluation mode"
    assert trace.layers[1].description.backward[0].formula == "gamma dout / sqrt(running_var + eps)"
    assert trace.layers[3].description.title == "Dropout(p=0.3), evaluation mode"
    assert trace.passed()
    assert "evaluation mode" in trace.format().splitlines()[1]


def test_a_wrong_backward_is_caught(rng: np.random.Generator) -> None:
    class Doubled(nn.Module):
        """``2x``, with a backward that forgets the 2."""

        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Parameter(np.ones(3))

        def forward(self, x: np.ndarray) -> np.ndarray:
            self._x = x
            return 2 * x * self.a.data

        def backward(self, dout: np.ndarray) -> np.ndarray:
            self.a.grad += (dout * self._x).sum(axis=0)  # missing the factor 2
            return 2 * dout * self.a.data

    model = nn.Sequential(nn.Linear(2, 3, rng=0, dtype=np.float64), Doubled())
    trace = explain(model, rng.standard_normal((4, 2)), rng.standard_normal((4, 3)), nn.MSELoss())
    errors = {p.name: p.rel_error for p in trace.params}
    assert errors["0.weight"] < 1e-6 and errors["0.bias"] < 1e-6
    assert errors["1.a"] == pytest.approx(1 / 3)  # |g - 2g| / (|g| + |2g|)
    assert not trace.passed()
    text = trace.format()
    assert "Doubled (no formula registered)" in text
    assert "    da = accumulated by backward: (3,)" in text
    assert "<- WRONG?" in text and "1 of 3 parameter gradients disagree" in text


def test_entries_none_checks_everything_and_entries_are_sampled_by_seed() -> None:
    model = nn.Sequential(nn.Linear(6, 5, rng=0, dtype=np.float64))
    x, y = np.random.default_rng(1).standard_normal((3, 6)), np.array([0, 4, 2])
    assert [p.checked for p in explain(model, x, y, entries=None).params] == [30, 5]
    assert [p.checked for p in explain(model, x, y, entries=4).params] == [4, 4]
    with pytest.raises(ValueError, match="entries"):
        explain(model, x, y, entries=0)
    unchecked = explain(model, x, y, check=False)
    assert not unchecked.checked and all(p.rel_error is None for p in unchecked.params)
    assert "numeric check" not in unchecked.format()


def test_a_kink_is_left_out_not_blamed() -> None:
    # bias 0 and an input of exact zeros put every ReLU input at its kink
    model = nn.Sequential(nn.Linear(3, 2, rng=0, dtype=np.float64), nn.ReLU())
    x = np.zeros((2, 3))
    trace = explain(model, x, np.ones((2, 2)), nn.MSELoss())
    bias = trace.params[1]
    assert bias.kinks == 2 and bias.checked == 0 and bias.rel_error is None
    assert trace.params[0].rel_error is not None  # zero gradients, but no kink
    text = trace.format()
    assert "not checked: all 2 entries at a kink (0.bias)" in text
    assert "2 entries were left out: within 2h of each lies a kink" in text


# -- every module and loss has its formula -------------------------------------------

F64 = np.float64


def _module_cases() -> list[tuple[nn.Module, tuple[int, ...]]]:
    return [
        (nn.Linear(5, 3, rng=0, dtype=F64), (4, 5)),
        (nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=F64), (2, 2, 5, 5)),
        (nn.BatchNorm1d(3, dtype=F64), (6, 3)),
        (nn.BatchNorm2d(2, dtype=F64), (3, 2, 4, 4)),
        (nn.LayerNorm(4, dtype=F64), (3, 4)),
        (nn.MaxPool2d(2), (2, 2, 4, 4)),
        (nn.AvgPool2d(2), (2, 2, 4, 4)),
        (nn.AdaptiveAvgPool2d(1), (2, 2, 3, 3)),
        (nn.ReLU(), (3, 4)),
        (nn.LeakyReLU(0.1), (3, 4)),
        (nn.ELU(), (3, 4)),
        (nn.SELU(), (3, 4)),
        (nn.GELU(), (3, 4)),
        (nn.SiLU(), (3, 4)),
        (nn.Sigmoid(), (3, 4)),
        (nn.Tanh(), (3, 4)),
        (nn.Softmax(), (3, 4)),
        (nn.LogSoftmax(), (3, 4)),
        (nn.Dropout(0.5, rng=0), (4, 5)),
        (nn.Dropout2d(0.5, rng=0), (2, 3, 2, 2)),
        (nn.Flatten(), (2, 3, 4)),
        (nn.Unflatten(1, (2, 3)), (4, 6)),
        (nn.Identity(), (3, 4)),
        (
            ConvMaxPool(nn.Conv2d(2, 3, 3, rng=0, dtype=F64), nn.MaxPool2d(2), nn.ReLU()),
            (2, 2, 6, 6),
        ),
    ]


def _loss_cases(rng: np.random.Generator) -> list[tuple[Any, np.ndarray]]:
    labels = np.array([0, 2, 1, 2])
    probs = rng.random((4, 3))
    return [
        (nn.CrossEntropyLoss(), labels),
        (nn.CrossEntropyLoss(label_smoothing=0.1, reduction="sum"), labels),
        (nn.NLLLoss(), labels),
        (nn.BCEWithLogitsLoss(), probs),
        (nn.MSELoss(), probs),
        (nn.L1Loss(), probs),
        (nn.HuberLoss(delta=0.5), probs),
        (nn.MultiMarginLoss(), labels),
        (nn.FocalLoss(), labels),
    ]


def _public(base: type) -> set[type]:
    found = {getattr(nn, name) for name in nn.__all__}
    return {c for c in found if isinstance(c, type) and issubclass(c, base) and c is not base}


def test_every_module_and_loss_has_a_case_and_a_formula() -> None:
    modules = _public(nn.Module) - {nn.Sequential} | {ConvMaxPool}
    assert {type(m) for m, _ in _module_cases()} == modules
    assert modules <= set(FORMULAS)
    losses = _public(nn.Loss)
    assert {type(loss) for loss, _ in _loss_cases(np.random.default_rng(0))} == losses
    assert losses <= set(LOSS_FORMULAS)


@pytest.mark.parametrize(("module", "in_shape"), _module_cases(), ids=lambda v: repr(v)[:30])
def test_module_formula_shapes_and_gradients(
    module: nn.Module, in_shape: tuple[int, ...], rng: np.random.Generator
) -> None:
    x = rng.standard_normal(in_shape)
    out_shape = copy.deepcopy(module).forward(x).shape
    trace = explain(nn.Sequential(module), x, rng.standard_normal(out_shape), nn.MSELoss())
    (layer,) = trace.layers
    d = layer.description
    assert "no formula registered" not in d.title
    steps = {s.lhs: s for s in d.backward}
    if "dx" in steps:
        assert steps["dx"].shapes.endswith(f"-> {shape(x)}")
    assert d.forward[-1].shapes.endswith(shape(out_shape))
    lhs = [s.lhs for s in d.backward]
    for p in layer.params:
        assert p.symbol in lhs, (p.name, p.symbol)
        assert steps[p.symbol].shapes.endswith(shape(p.shape)), steps[p.symbol]
    assert trace.passed(), [(p.name, p.rel_error, p.kinks) for p in trace.params]
    _lines_at_most_80(trace.format())


def test_loss_formulas(rng: np.random.Generator) -> None:
    for loss, target in _loss_cases(rng):
        z = rng.standard_normal((4, 3))
        model = nn.Sequential(nn.Linear(3, 3, rng=0, dtype=F64))
        trace = explain(model, z, target, loss)
        d = trace.loss.description
        assert "no formula registered" not in d.title, loss
        assert d.backward[0].lhs.startswith("dz") and "(4, 3)" in d.backward[0].shapes
        loss.forward(trace.loss.z, target)
        np.testing.assert_allclose(trace.loss.dz, loss.backward(), rtol=1e-12)
        assert trace.passed(), loss
        _lines_at_most_80(trace.format())


def test_a_registered_formula_replaces_the_generic_one(
    monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator
) -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Parameter(np.full(1, 3.0))

        def forward(self, x: np.ndarray) -> np.ndarray:
            self._x = x
            return x * self.a.data

        def backward(self, dout: np.ndarray) -> np.ndarray:
            self.a.grad += (dout * self._x).sum()
            return dout * self.a.data

    def describe_scale(m: Scale, x: np.ndarray, out: np.ndarray) -> Description:
        return Description(
            "Scale",
            (Step("out", "a x", f"{shape(x)} -> {shape(out)}"),),
            (
                Step("dx", "a dout", f"{shape(out)} -> {shape(x)}"),
                Step("da", "sum(dout * x)", f"{shape(out)} -> (1,)", param="a"),
            ),
        )

    monkeypatch.setitem(FORMULAS, Scale, FORMULAS.get(Scale))  # removed again afterwards
    register_formula(Scale)(describe_scale)
    trace = explain(
        nn.Sequential(Scale()), rng.standard_normal((2, 3)), np.zeros((2, 3)), nn.MSELoss()
    )
    text = trace.format()
    assert "    da = sum(dout * x): (2, 3) -> (1,)" in text.splitlines()
    assert trace.passed()


def test_long_lines_wrap_within_80_columns(rng: np.random.Generator) -> None:
    class AModuleWithAVeryLongNameThatNobodyWouldTypeTwiceInOneDayOfWork(nn.Identity):
        pass

    model = nn.Sequential(AModuleWithAVeryLongNameThatNobodyWouldTypeTwiceInOneDayOfWork())
    x = rng.standard_normal((2, 3, 4, 5, 6))
    text = explain(model, x, np.zeros_like(x), nn.MSELoss()).format()
    _lines_at_most_80(text)
    assert "(no formula" in text and "(2, 3, 4, 5, 6)" in text
    narrow = explain(model, x, np.zeros_like(x), nn.MSELoss()).format(width=60)
    assert max(len(line) for line in narrow.splitlines()) <= 60


# -- a saved CNN ---------------------------------------------------------------------


def _saved_cnn(tmp_path: Path) -> Path:
    g = np.random.default_rng(3)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=g),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1, rng=g),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25, rng=g),
        nn.Linear(4 * 6 * 6, 10, rng=g),
    )
    for conv in (model[0], model[4]):
        conv.bias.data[...] = g.uniform(0.05, 0.2, conv.bias.shape)  # a trained model's
    path = tmp_path / "cnn.npz"
    save(model, path)
    return path


def test_saved_cnn_layer_by_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _saved_cnn(tmp_path)
    code, out, err = _cli(["explain", "--model", str(path), "--batch-size", "4"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    titles = [
        line.split("] ", 1)[1]
        for line in out.split("== backward")[0].splitlines()
        if line.startswith("[")
    ]
    # the modules as written: no fused convolution + pooling
    assert titles == [
        "Conv2d(1 -> 4, 3x3)",
        "BatchNorm2d(4)",
        "ReLU",
        "MaxPool2d(2x2)",
        "Conv2d(4 -> 4, 3x3, pad 1)",
        "ReLU",
        "MaxPool2d(2x2)",
        "Flatten",
        "Dropout(p=0.25)",
        "Linear(144 -> 10)",
    ]
    for line in (
        "    cols = im2col(x): one 3x3 patch per row: (4, 1, 28, 28) -> (2704, 9)",
        "    out = cols W^T + b: (2704, 9) @ (9, 4) -> (4, 4, 26, 26)",
        "    dW = dout^T cols: (4, 2704) @ (2704, 9) -> (4, 1, 3, 3)",
        "    dx = col2im(dout W): (2704, 4) @ (4, 9) -> (4, 1, 28, 28)",
        "    out = max of each window: (4, 4, 26, 26) -> (4, 4, 13, 13)",
        "    dW = dout^T cols: (4, 676) @ (676, 36) -> (4, 4, 3, 3)",
        "    dgamma = sum of dout * xhat over N, H, W: (4, 4, 26, 26) -> (4,)",
        "    out = x * m, m = (u >= 0.25) / 0.75, u ~ U(0, 1): (4, 144) -> (4, 144)",
    ):
        assert line in lines, line
    errors = _printed_errors(out)
    assert len(errors) >= 6 and max(errors) < 1e-6
    assert "data     4 MNIST test images" in out
    _lines_at_most_80(out)
    # the same seed, the same output (dropout's generator is reseeded)
    assert _cli(["explain", "--model", str(path), "--batch-size", "4"], capsys)[1] == out


def test_saved_mlp_default_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mlp.npz"
    save(build_mlp(784, [32, 16], 10, rng=5, dtype=np.float64), path)
    code, out, err = _cli(["explain", "--model", str(path), "--seed", "2"], capsys)
    assert code == 0, err
    assert "    dW = dout^T x: (32, 64) @ (64, 784) -> (32, 784)" in out.splitlines()
    assert "model    6 layers, 25,818 parameters, float64, training mode" in out
    assert max(_printed_errors(out)) < 1e-6


# -- --plot ---------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_plot_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "sub" / "layers.png"
    target.parent.mkdir()  # the command line creates no missing directories
    code, out, _ = _cli(["explain", "--tiny", "--plot", str(target)], capsys)
    assert code == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.rstrip().endswith(f"histograms of activations and gradients written to {target}")


def test_plot_without_matplotlib_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    code, out, err = _cli(["explain", "--tiny", "--plot", str(tmp_path / "x.png")], capsys)
    assert code == 2 and out == ""
    from handgrad._install import install_hint  # this copy's command (a checkout's here)

    assert err == (
        "handgrad explain: error: --plot needs matplotlib, which is not installed: "
        f"{install_hint('plots')}\n"
    )


# -- errors ---------------------------------------------------------------------------


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = tmp_path / "small.npz"
    save(nn.Sequential(nn.Flatten(), nn.Linear(20, 10, rng=0)), small)
    five = tmp_path / "five.npz"
    save(build_mlp(784, [8], 5, rng=0), five)
    cases = {
        ("--model", str(tmp_path / "missing.npz")): "missing.npz",
        ("--model", str(small)): "the model expects 20 input features, the data has 784",
        ("--model", str(five)): "the model has 5 outputs",
        ("--tiny", "--model", str(five)): "--tiny has its own network and batch: leave out --model",
        ("--tiny", "--batch-size", "3"): "leave out --batch-size",
        ("--tiny", "--data-dir", str(tmp_path)): "leave out --data-dir",
        ("--data-dir", str(tmp_path)): "MNIST",
        ("--batch-size", "20000"): "--batch-size 20000: the test set has only 10000 images",
        ("--plot", str(tmp_path)): f"give a file name such as {tmp_path / 'layers.png'}",
    }
    for argv, message in cases.items():
        code, out, err = _cli(["explain", *argv], capsys)
        assert code == 2, (argv, out, err)
        assert out == "" and err.count("\n") == 1 and message in err, (argv, err)
        assert err.startswith("handgrad explain: error: ")
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--entries", "0"])
    assert exc.value.code == 2
    assert "--entries" in capsys.readouterr().err


def test_a_diverged_model_with_nan_weights_is_named_not_passed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rng: np.random.Generator
) -> None:
    """NaN weights (a diverged run) used to crash the check or the text, and a NaN
    relative error printed "all ... agree" with exit status 0."""
    model = nn.Sequential(
        nn.Linear(4, 6, rng=1, dtype=np.float64),
        nn.ReLU(),
        nn.Linear(6, 3, rng=2, dtype=np.float64),
    )
    model[0].weight.data[0, 0] = np.nan
    trace = explain(model, rng.standard_normal((8, 4)), rng.integers(0, 3, 8))
    assert not trace.passed() and np.isnan(trace.max_rel_error)
    assert "the loss is nan: the weights or the batch hold NaN or inf" in trace.format()
    path = tmp_path / "diverged.npz"
    diverged = build_mlp(784, [8], 10, rng=0, dtype=np.float64)
    for p in diverged.parameters():
        p.data[...] = np.nan
    save(diverged, path)
    # A saved model with non-finite weights is refused at load (issue 11), before
    # explain could print anything that looks like a verdict.
    code, out, err = _cli(["explain", "--model", str(path), "--batch-size", "4"], capsys)
    assert code == 2 and out == "", out
    assert str(path) in err and "non-finite" in err and "agree" not in err
    assert len(err.strip().splitlines()) == 1


def test_top_level_export() -> None:
    assert handgrad.explain is explain
    assert "explain" in handgrad.__all__


# -- docs/explain.md shows the real output ------------------------------------------------

BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _masked(text: str) -> str:
    """The relative errors are round-off: their digits depend on the BLAS library's
    summation order, so the comparison stops at "below the threshold"."""
    return ERRORS.sub("rel. error <below 1e-6>", text)


def test_docs_show_the_real_output(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = [body for lang, body in BLOCK.findall(DOCS.read_text("utf-8")) if lang == "console"]
    commands = [b for b in blocks if b.startswith("$ handgrad explain")]
    assert {b.splitlines()[0] for b in commands} >= {
        "$ handgrad explain",
        "$ handgrad explain --tiny",
    }
    for block in commands:
        command, _, shown = block.partition("\n")
        code, out, err = _cli(command.split()[2:], capsys)
        assert code == 0, err
        errors = _printed_errors(out)
        assert errors and max(errors) < THRESHOLD
        assert max(_printed_errors(shown)) < THRESHOLD
        assert _masked(shown) == _masked(out), f"docs/explain.md: `{command}` prints otherwise"


def test_docs_python_blocks_run() -> None:
    blocks = [body for lang, body in BLOCK.findall(DOCS.read_text("utf-8")) if lang == "python"]
    assert blocks
    namespace: dict[str, object] = {}
    for code in blocks:
        exec(compile(code, str(DOCS), "exec"), namespace)
    assert isinstance(namespace.get("trace"), Trace)


def test_docs_convolution_lines_are_real() -> None:
    from handgrad.recipes import build_lenet

    blocks = [body for lang, body in BLOCK.findall(DOCS.read_text("utf-8")) if lang == "text"]
    (block,) = [b for b in blocks if b.startswith("[2] Conv2d")]
    x, y = _mnist_batch(8)
    lines = explain(build_lenet(rng=0), x, y, check=False).format().splitlines()
    shown = [line for line in block.splitlines() if line != "..."]
    assert len(shown) == 6 and all(line in lines for line in shown), shown


def test_the_api_names_what_is_wrong_with_its_arguments() -> None:
    model = nn.Sequential(nn.Linear(4, 3, rng=0), nn.ReLU(), nn.Linear(3, 2, rng=1))
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    y = np.array([0, 1, 0, 1, 1])
    with pytest.raises(TypeError, match="needs a handgrad Module as model, got function"):
        explain(lambda v: v, x, y)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"got the class CrossEntropyLoss: pass CrossEntropyLoss\(\)"
    ):
        explain(model, x, y, nn.CrossEntropyLoss)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"non-empty batch .* x of shape \(0, 4\)"):
        explain(model, x[:0], y[:0])
    with pytest.raises(ValueError, match=r"one target per sample.*y of shape \(4,\)"):
        explain(model, x, y[:4])
