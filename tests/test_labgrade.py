"""The lab grader rejects what the lab forbids, each with a clear reason."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import handgrad.lab
from handgrad.labgrade import grade

LAB = Path(handgrad.lab.__file__).read_text()
TINY = dict(train_size=1500, epochs=1, val_fraction=0.2, min_accuracy=0.5, time_limit=60)


def _write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "submission.py"
    path.write_text(textwrap.dedent(source))
    return path


def _patched(old: str, new: str) -> str:
    assert old in LAB
    return LAB.replace(old, new, 1)


def test_the_lab_file_passes_a_tiny_protocol(tmp_path: Path) -> None:
    result = grade(_write(tmp_path, LAB), **TINY)
    assert result.passed, result.reason
    assert len(result.epochs) == 1 and {"train_loss", "val_loss", "val_accuracy"} <= set(
        result.epochs[0]
    )
    assert result.test_accuracy is not None and result.test_accuracy > 0.8
    assert result.peak_mb is not None and result.peak_mb < 2048


@pytest.mark.parametrize("module", ["torch", "handgrad", "sklearn"])
def test_importing_other_libraries_is_refused(tmp_path: Path, module: str) -> None:
    result = grade(_write(tmp_path, f"import {module}\n" + LAB), **TINY)
    assert not result.passed
    assert result.reason == (
        f"submission imports {module!r}, which is not allowed (NumPy and the standard library only)"
    )


def test_allocating_past_the_memory_cap_is_refused(tmp_path: Path) -> None:
    source = _patched(
        "        self._t = 0\n", "        self._t = 0\n        self.hoard = np.ones(400_000_000)\n"
    )
    result = grade(_write(tmp_path, source), **{**TINY, "memory_mb": 1024})
    assert not result.passed
    assert result.reason == "memory limit exceeded (1024 MB)"


def test_running_past_the_time_limit_is_refused(tmp_path: Path) -> None:
    source = "import time\n" + _patched(
        '        """One forward and backward pass on a mini-batch; returns the loss."""\n',
        '        """One forward and backward pass on a mini-batch; returns the loss."""\n'
        "        time.sleep(30)\n",
    )
    result = grade(_write(tmp_path, source), **{**TINY, "time_limit": 6})
    assert not result.passed
    assert result.reason == "time limit exceeded: 6 s"


def test_a_wrong_forward_shape_is_refused(tmp_path: Path) -> None:
    source = _patched("        return P\n", "        return P[:, :9]\n")
    result = grade(_write(tmp_path, source), **TINY)
    assert result.reason == "forward returned shape (64, 9), expected (64, 10)"


def test_softmax_overflow_is_refused(tmp_path: Path) -> None:
    naive = """
    import numpy as np

    class NeuralNetwork:
        def __init__(self, input_size=784, hidden_size=128, output_size=10, lr=0.01):
            rng = np.random.default_rng(0)
            self.W1 = rng.standard_normal((input_size, hidden_size)) * 10
            self.b1 = np.zeros(hidden_size)
            self.W2 = rng.standard_normal((hidden_size, output_size)) * 10
            self.b2 = np.zeros(output_size)
            self.lr = lr

        def forward(self, X):
            self.A = np.maximum(X @ self.W1 + self.b1, 0)
            E = np.exp(self.A @ self.W2 + self.b2)   # no max subtraction: overflows
            return E / E.sum(axis=1, keepdims=True)

        def backward(self, X, y, probs):
            d = probs.copy(); d[np.arange(len(y)), y] -= 1; d /= len(y)
            self.W2 -= self.lr * self.A.T @ d; self.b2 -= self.lr * d.sum(0)
            dA = (d @ self.W2.T) * (self.A > 0)
            self.W1 -= self.lr * X.T @ dA; self.b1 -= self.lr * dA.sum(0)
            return float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())

        def train_step(self, X, y):
            return self.backward(X, y, self.forward(X))

        def predict(self, X):
            return self.forward(X).argmax(axis=1)
    """
    result = grade(_write(tmp_path, naive), **TINY)
    assert result.reason == "forward: probabilities contain NaN/inf (softmax overflow?)"


def test_weights_that_never_change_are_refused(tmp_path: Path) -> None:
    source = _patched("        self._t += 1\n", "        return loss\n        self._t += 1\n")
    result = grade(_write(tmp_path, source), **TINY)
    assert result.reason == "backward did not update W1, b1, W2, b2"


def test_a_wrong_signature_is_refused(tmp_path: Path) -> None:
    source = _patched("def backward(self, X, y, probs):", "def backward(self, X, y):")
    result = grade(_write(tmp_path, source), **TINY)
    assert result.reason == "NeuralNetwork.backward must take (self, X, y, probs), got (self, X, y)"


def test_low_accuracy_is_refused(tmp_path: Path) -> None:
    source = _patched("        step = self.lr", "        step = 1e-9 * self.lr")
    result = grade(_write(tmp_path, source), **{**TINY, "min_accuracy": 0.85})
    assert not result.passed and result.test_accuracy is not None
    assert (
        result.reason.startswith("test accuracy") and "below the required 85.00%" in result.reason
    )


def test_command_line_grade_and_errors(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "handgrad", "lab", "grade"]
    ok = subprocess.run(
        [*run, "--train-size", "1500", "--epochs", "1", "--min-accuracy", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "epoch  train loss  val loss  val acc" in ok.stdout and "PASSED" in ok.stdout
    bad = _write(tmp_path, _patched("        return P\n", "        return P[:, :9]\n"))
    failed = subprocess.run(
        [*run, str(bad), "--train-size", "1500", "--epochs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1 and "FAILED: forward returned shape" in failed.stdout
    missing = subprocess.run([*run, str(tmp_path / "nope.py")], capture_output=True, text=True)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("protocol", "required"),
    [
        (dict(epochs=8, batch_size=64, val_fraction=0.0), 0.978),
        (dict(epochs=8, batch_size=64, train_size=10_000, val_fraction=0.0), 0.955),
        (dict(epochs=3, batch_size=256, val_fraction=0.0), 0.965),
    ],
    ids=["full-b64-e8", "10k-b64-e8", "full-b256-e3"],
)
def test_the_lab_meets_its_targets(protocol: dict, required: float) -> None:
    result = grade(Path(handgrad.lab.__file__), **protocol, min_accuracy=required)
    assert result.passed, result.reason
    assert result.seconds is not None and result.seconds < 120
    assert result.peak_mb is not None and result.peak_mb < 2048
