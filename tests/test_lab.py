"""The lab file: agrees with the package's layers, passes a numeric gradient check, and
each pitfall the lab warns about has a test that would catch it."""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from handgrad.data import load_mnist
from handgrad.gradcheck import numeric_gradient, relative_error
from handgrad.lab import ANSWER_SOURCE, NeuralNetwork, export_lab
from handgrad.nn import CrossEntropyLoss, Linear, ReLU, Sequential


class NeuralNetwork64(NeuralNetwork):
    dtype = np.float64


def _batch(n: int = 16, d: int = 784, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), rng.integers(0, 10, size=n)


def test_gradients_match_the_packages_layers() -> None:
    net = NeuralNetwork64(seed=3)
    x, y = _batch()
    model = Sequential(
        Linear(784, 128, dtype=np.float64, rng=0), ReLU(), Linear(128, 10, dtype=np.float64, rng=0)
    )
    model.load_state_dict(
        {"0.weight": net.W1.T, "0.bias": net.b1, "2.weight": net.W2.T, "2.bias": net.b2}
    )
    probs = net.forward(x)
    loss, (dW1, db1, dW2, db2) = net.gradients(x, y, probs)
    ce = CrossEntropyLoss()
    value = ce(model.forward(x), y)
    model.backward(ce.backward())
    assert loss == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(dW1, model[0].weight.grad.T, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(db1, model[0].bias.grad, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dW2, model[2].weight.grad.T, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(db2, model[2].bias.grad, rtol=1e-10, atol=1e-14)


def test_gradients_pass_a_numeric_check() -> None:
    """Catches a missing transpose or a wrong factor in any of the four gradients."""
    net = NeuralNetwork64(input_size=8, hidden_size=6, output_size=10, seed=1)
    net.b1 += 0.3  # keep the hidden units away from the ReLU kink
    x, y = _batch(5, 8)

    def loss() -> float:
        return net.gradients(x, y, net.forward(x))[0]

    _, grads = net.gradients(x, y, net.forward(x))
    for name, g in zip(("W1", "b1", "W2", "b2"), grads, strict=True):
        assert g.shape == getattr(net, name).shape, f"d{name} has the wrong shape"
        assert relative_error(g, numeric_gradient(loss, getattr(net, name))) < 1e-6, name


def test_shapes_for_any_batch_size() -> None:
    net = NeuralNetwork()
    for n in (1, 7, 64):
        x, y = _batch(n)
        assert net.forward(x).shape == (n, 10)
        assert net.predict(x).shape == (n,)
        assert np.ndim(net.train_step(x, y)) == 0


def test_softmax_does_not_overflow() -> None:
    net = NeuralNetwork()
    net.W2 *= 1e4  # logits in the thousands: a naive exp() overflows to inf, then NaN
    x, y = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probs = net.forward(x)
        loss = net.backward(x, y, probs)
    assert np.all(np.isfinite(probs)) and np.allclose(probs.sum(axis=1), 1.0)
    assert np.isfinite(loss)


def test_initialisation_scale_gives_a_sensible_start() -> None:
    """He/LeCun scale: the first loss on real digits is near log(10), not huge or flat."""
    d = load_mnist()
    x = d.x_train[:512].reshape(512, -1) / 255.0
    net = NeuralNetwork()
    hidden = np.maximum(x @ net.W1 + net.b1, 0)
    assert 0.2 < hidden.std() < 5.0
    loss, _ = net.gradients(x, d.y_train[:512], net.forward(x))
    assert abs(loss - np.log(10)) < 1.0


def test_gradients_are_averaged_over_the_batch() -> None:
    net = NeuralNetwork64()
    x, y = _batch(8)
    _, once = net.gradients(x, y, net.forward(x))
    x2, y2 = np.concatenate([x, x]), np.concatenate([y, y])
    _, twice = net.gradients(x2, y2, net.forward(x2))
    for a, b in zip(once, twice, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15)  # a sum would be 2x


def test_backward_leaves_its_inputs_alone() -> None:
    net = NeuralNetwork()
    x, y = _batch()
    probs = net.forward(x)
    copies = (x.copy(), y.copy(), probs.copy())
    net.backward(x, y, probs)
    for a, b in zip((x, y, probs), copies, strict=True):
        np.testing.assert_array_equal(a, b)


def test_same_seed_same_numbers() -> None:
    x, y = _batch()
    a, b, c = NeuralNetwork(seed=5), NeuralNetwork(seed=5), NeuralNetwork(seed=6)
    for net in (a, b, c):
        for _ in range(3):
            net.train_step(x, y)
    np.testing.assert_array_equal(a.W1, b.W1)
    assert not np.array_equal(a.W1, c.W1)


def _train(net: NeuralNetwork, x: np.ndarray, y: np.ndarray, epochs: int) -> NeuralNetwork:
    """Shuffled mini-batches of 64, as a grader would drive the class."""
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(x), 64):
            net.train_step(x[order[s : s + 64]], y[order[s : s + 64]])
    return net


def test_learns_a_small_slice_of_mnist() -> None:
    d = load_mnist()
    x = d.x_train[:3000].reshape(3000, -1) / np.float32(255)
    net = _train(NeuralNetwork(), x, d.y_train[:3000], epochs=3)
    acc = np.mean(
        net.predict(d.x_test[:1000].reshape(1000, -1) / np.float32(255)) == d.y_test[:1000]
    )
    assert acc > 0.88


def test_raw_pixel_values_are_scaled() -> None:
    net = NeuralNetwork()
    x, _ = _batch()
    np.testing.assert_allclose(net.forward(x * 255), net.forward(x), rtol=1e-5, atol=1e-7)


def test_integer_pixels_are_scaled_even_when_faint() -> None:
    net = NeuralNetwork()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(16, 784)).astype(np.uint8)
    faint = rng.integers(0, 2, size=(16, 784)).astype(np.uint8)  # a dark batch: max 1
    for x in (pixels, faint):
        np.testing.assert_allclose(net.forward(x), net.forward(x / 255.0), rtol=1e-5, atol=1e-7)


def test_standardised_input_is_not_mistaken_for_pixels() -> None:
    """(x/255 - 0.1307) / 0.3081 reaches 2.8 but has negative background: never rescaled."""
    d = load_mnist()
    x01 = d.x_train[:3000].reshape(3000, -1) / np.float32(255)
    x_test01 = d.x_test[:1000].reshape(1000, -1) / np.float32(255)
    mean, std = np.float32(0.1307), np.float32(0.3081)
    accuracy = {}
    for name, (x, x_test) in {
        "unit": (x01, x_test01),
        "standardised": ((x01 - mean) / std, (x_test01 - mean) / std),
    }.items():
        net = _train(NeuralNetwork(), x, d.y_train[:3000], epochs=2)
        accuracy[name] = np.mean(net.predict(x_test) == d.y_test[:1000])
    assert accuracy["unit"] > 0.86
    assert accuracy["standardised"] > accuracy["unit"] - 0.02, accuracy


def test_one_hot_labels_give_the_same_step() -> None:
    x, y = _batch()
    a, b = NeuralNetwork(), NeuralNetwork()
    loss_a = a.train_step(x, y)
    loss_b = b.train_step(x, np.eye(10)[y])
    assert loss_a == loss_b
    np.testing.assert_array_equal(a.W1, b.W1)
    np.testing.assert_array_equal(a.b2, b.b2)


@pytest.mark.parametrize("bad", [10, -1])
def test_labels_out_of_range_are_a_clear_error(bad: int) -> None:
    net = NeuralNetwork()
    x, y = _batch()
    y[3] = bad
    with pytest.raises(ValueError, match=rf"labels must be in 0\.\.9, got {bad}"):
        net.train_step(x, y)


def test_the_lab_file_parses_as_python_38() -> None:
    """The lab's editor may run an older Python: no 3.9+ syntax, no zip(strict=...)."""
    tree = ast.parse(ANSWER_SOURCE.read_text(), feature_version=(3, 8))
    strict = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and any(k.arg == "strict" for k in node.keywords)
    ]
    assert strict == [], f"strict= (Python 3.10+) on lines {strict}"


def _old_pythons() -> list[str]:
    """Interpreters older than 3.10 on this machine (pyenv builds, python3.8/3.9 on PATH)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.[89].*/bin/python")))
    candidates += glob.glob("/root/.pyenv/versions/3.9.18/bin/python")
    candidates += [p for p in (shutil.which("python3.8"), shutil.which("python3.9")) if p]
    found: list[str] = []
    for exe in dict.fromkeys(candidates):
        check = "import sys; sys.exit(0 if sys.version_info < (3, 10) else 1)"
        try:
            ok = subprocess.run([exe, "-c", check], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if ok.returncode == 0:
            found.append(exe)
    return found


def test_the_lab_file_runs_on_older_pythons() -> None:
    pythons = _old_pythons()
    if not pythons:
        pytest.skip("no Python 3.8/3.9 on this machine")
    path = str(ANSWER_SOURCE)
    with_numpy = []
    for exe in pythons:
        compiled = subprocess.run(
            [exe, "-c", "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')", path],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert compiled.returncode == 0, f"{exe}: {compiled.stderr}"
        if subprocess.run([exe, "-c", "import numpy"], capture_output=True).returncode == 0:
            with_numpy.append(exe)
    if not with_numpy:
        pytest.skip(f"compiled with {', '.join(pythons)}; none has NumPy to train a step")
    script = (
        "import sys, runpy, numpy as np\n"
        "net = runpy.run_path(sys.argv[1])['NeuralNetwork']()\n"
        "rng = np.random.default_rng(0)\n"
        "x, y = rng.random((8, 784)), rng.integers(0, 10, size=8)\n"
        "losses = [net.train_step(x, y) for _ in range(3)]\n"
        "assert losses[2] < losses[0], losses\n"
        "assert net.predict(x).shape == (8,)\n"
    )
    for exe in with_numpy:
        ran = subprocess.run([exe, "-c", script, path], capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, f"{exe}: {ran.stderr}"


def test_the_lab_file_imports_only_numpy() -> None:
    tree = ast.parse(ANSWER_SOURCE.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported == {"numpy"}


def test_export_writes_the_lab_file(tmp_path: Path) -> None:
    path = export_lab(tmp_path / "nn.py")
    assert path.read_text() == ANSWER_SOURCE.read_text()
    assert export_lab(tmp_path).name == "neural_network.py"
