"""The lab grader rejects what the lab forbids, each with a clear reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from handgrad.cli import main as cli_main
from handgrad.lab import ANSWER_SOURCE, grade
from tests.conftest import write_submission

LAB = ANSWER_SOURCE.read_text()
TINY = dict(train_size=1500, epochs=1, val_fraction=0.2, min_accuracy=0.5, time_limit=60)


def _patched(old: str, new: str) -> str:
    assert old in LAB
    return LAB.replace(old, new, 1)


def test_the_lab_file_passes_a_tiny_protocol(tmp_path: Path) -> None:
    result = grade(write_submission(tmp_path, LAB), **TINY)
    assert result.passed, result.reason
    assert len(result.epochs) == 1 and {"train_loss", "val_loss", "val_accuracy"} <= set(
        result.epochs[0]
    )
    assert result.test_accuracy is not None and result.test_accuracy > 0.8
    assert result.peak_mb is not None and result.peak_mb < 2048


# pytest and hypothesis are installed wherever these tests run; scipy and torch may not
# be, and are refused either way. __main__ is the grader itself.
@pytest.mark.parametrize(
    "module", ["torch", "handgrad", "sklearn", "scipy", "pytest", "hypothesis", "__main__"]
)
def test_importing_other_libraries_is_refused(tmp_path: Path, module: str) -> None:
    result = grade(write_submission(tmp_path, f"import {module}\n" + LAB), **TINY)
    assert not result.passed
    assert result.reason == (
        f"submission imports {module!r}, which is not allowed (NumPy and the standard library only)"
    )


def test_allocating_past_the_memory_cap_is_refused(tmp_path: Path) -> None:
    source = _patched(
        "        self._t = 0\n", "        self._t = 0\n        self.hoard = np.ones(400_000_000)\n"
    )
    result = grade(write_submission(tmp_path, source), **{**TINY, "memory_mb": 1024})
    assert not result.passed
    assert result.reason == "memory limit exceeded (1024 MB)"


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for init counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_running_past_the_time_limit_kills_the_whole_process_group(
    tmp_path: Path, open_dir: Path
) -> None:
    pid_file = open_dir / "grandchild.pid"
    spawn = (
        "import subprocess, sys, time\n"
        "_sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(_sleeper.pid))\n"
    )
    source = spawn + _patched(
        '        """One forward and backward pass on a mini-batch; returns the loss."""\n',
        '        """One forward and backward pass on a mini-batch; returns the loss."""\n'
        "        time.sleep(60)\n",
    )
    result = grade(write_submission(tmp_path, source), **{**TINY, "time_limit": 8})
    assert not result.passed
    assert result.reason == "time limit exceeded: 8 s"
    pid = int(pid_file.read_text())
    try:
        for _ in range(50):
            if _gone(pid):
                break
            time.sleep(0.1)
        assert _gone(pid), "the submission's own child outlived the time limit"
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_wrong_forward_shape_is_refused(tmp_path: Path) -> None:
    source = _patched("        return P\n", "        return P[:, :9]\n")
    result = grade(write_submission(tmp_path, source), **TINY)
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
    result = grade(write_submission(tmp_path, naive), **TINY)
    assert result.reason == "forward: probabilities contain NaN/inf (softmax overflow?)"


def test_weights_that_never_change_are_refused(tmp_path: Path) -> None:
    source = _patched("        self._adam_step()\n        return loss\n", "        return loss\n")
    result = grade(write_submission(tmp_path, source), **TINY)
    assert result.reason == "backward did not update W1, b1, W2, b2"


def test_a_wrong_signature_is_refused(tmp_path: Path) -> None:
    source = _patched("def backward(self, X, y, probs):", "def backward(self, X, y):")
    result = grade(write_submission(tmp_path, source), **TINY)
    assert result.reason == "NeuralNetwork.backward must take (self, X, y, probs), got (self, X, y)"


def test_low_accuracy_is_refused(tmp_path: Path) -> None:
    source = _patched("        lr_t = self.lr", "        lr_t = 1e-9 * self.lr")
    result = grade(write_submission(tmp_path, source), **{**TINY, "min_accuracy": 0.85})
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
    bad = write_submission(tmp_path, _patched("        return P\n", "        return P[:, :9]\n"))
    failed = subprocess.run(
        [*run, str(bad), "--train-size", "1500", "--epochs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1 and "FAILED: forward returned shape" in failed.stdout
    assert f"'handgrad lab check {bad}' names the usual bugs" in failed.stdout
    missing = subprocess.run([*run, str(tmp_path / "nope.py")], capture_output=True, text=True)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


_FORGED = b'{"event": "done", "test_accuracy": 0.999, "seconds": 1.0, "peak_mb": 1.0}\n'


@pytest.mark.parametrize(
    ("fd", "reason"),
    [
        # what it printed is quoted as its last words, not taken as a result
        ("1", "submission ended the grading process early (exit code 0)"),
        # the private pipe wants the predictions, and scores them itself
        ("json.loads(sys.argv[1])['result_fd']", "the grader's result pipe carried something"),
    ],
    ids=["stdout", "result-pipe"],
)
def test_a_forged_result_does_not_pass(tmp_path: Path, fd: str, reason: str) -> None:
    forge = f"import json, os, sys\nos.write({fd}, {_FORGED!r})\nos._exit(0)\n"
    result = grade(write_submission(tmp_path, forge + LAB), **TINY)
    assert not result.passed and result.test_accuracy is None
    assert result.reason.startswith(reason)


def test_printing_to_stdout_neither_breaks_nor_forges_the_grade(tmp_path: Path) -> None:
    noise = f"print({_FORGED.decode().strip()!r}); print('hello'); os.write(1, b'not json\\n')"
    source = f"import os\n{noise}\n" + _patched(
        '        """One forward and backward pass on a mini-batch; returns the loss."""\n',
        '        """One forward and backward pass on a mini-batch; returns the loss."""\n'
        f"        {noise}\n",
    )
    result = grade(write_submission(tmp_path, source), **TINY)
    assert result.passed, result.reason
    assert result.test_accuracy is not None and 0.5 < result.test_accuracy < 0.99
    assert len(result.epochs) == 1


def test_predict_cannot_read_the_test_labels_from_the_grader(tmp_path: Path) -> None:
    peek = """
    import sys

    class NeuralNetwork(NeuralNetwork):
        def predict(self, X):
            frame = sys._getframe()
            while frame is not None:  # up to the grader's run(), for its y_test
                for name in ("y_test", "y_val", "labels"):
                    y = frame.f_locals.get(name)
                    if y is not None and len(y) == len(X):
                        return y
                frame = frame.f_back
            return super().predict(X)
    """
    result = grade(
        write_submission(tmp_path, LAB + textwrap.dedent(peek)), **{**TINY, "min_accuracy": 0.97}
    )
    assert not result.passed and result.test_accuracy is not None
    assert result.test_accuracy < 0.97
    assert result.reason.startswith("test accuracy")


def test_patching_numpy_in_the_submission_does_not_change_the_score(tmp_path: Path) -> None:
    source = "import numpy\nnumpy.mean = lambda *a, **k: 0.999\n" + _patched(
        "        lr_t = self.lr", "        lr_t = 1e-9 * self.lr"
    )
    result = grade(write_submission(tmp_path, source), **TINY)
    assert not result.passed and result.test_accuracy is not None
    assert result.test_accuracy < 0.5
    assert all(e["val_accuracy"] < 0.5 for e in result.epochs)


@pytest.mark.parametrize(
    ("crash", "reason"),
    [
        ("import faulthandler\nfaulthandler._sigsegv()", "killed by signal SIGSEGV"),
        ("import os\nos.abort()", "killed by signal SIGABRT"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "killed by signal SIGKILL"),
    ],
    ids=["segfault", "abort", "sigkill"],
)
def test_a_signal_is_not_reported_as_a_memory_limit(
    tmp_path: Path, crash: str, reason: str
) -> None:
    result = grade(write_submission(tmp_path, crash + "\n" + LAB), **TINY)
    assert not result.passed
    assert result.reason.startswith(f"submission crashed: {reason}")
    assert "memory limit" not in result.reason


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("import numpy as np\n", "import sys\nsys.exit(0)\n", "at import"),
        ("        Xf = self._prepare(X)\n", "        raise SystemExit(3)\n", "in forward"),
    ],
    ids=["import", "forward"],
)
def test_sys_exit_in_the_submission_is_named(
    tmp_path: Path, old: str, new: str, reason: str
) -> None:
    source = "import numpy as np\n" + _patched(old, new)
    result = grade(write_submission(tmp_path, source), **TINY)
    assert not result.passed
    code = 0 if reason == "at import" else 3
    assert result.reason == f"submission called sys.exit({code}) {reason}"


def test_numpy_testing_and_private_stdlib_modules_are_allowed(tmp_path: Path) -> None:
    imports = """
    import sysconfig

    import numpy as np
    import numpy.testing

    sysconfig.get_config_vars()  # imports the private _sysconfigdata_* module
    np.testing.assert_allclose(np.ones(3), np.ones(3))
    """
    result = grade(write_submission(tmp_path, textwrap.dedent(imports) + LAB), **TINY)
    assert result.passed, result.reason


def test_weights_must_have_the_labs_shapes(tmp_path: Path) -> None:
    source = _patched(
        "        rng = np.random.default_rng(seed)\n",
        "        rng = np.random.default_rng(seed)\n        hidden_size = 100\n",
    )
    result = grade(write_submission(tmp_path, source), **TINY)
    assert result.reason == (
        "NeuralNetwork.W1 has shape (784, 100), expected (784, 128) or (128, 784) "
        "(the lab's network is 784 -> 128 -> 10)"
    )


def test_predict_is_checked_on_the_full_test_set(tmp_path: Path) -> None:
    source = _patched(
        "        return (A @ self.W2 + self.b2).argmax(axis=1)",
        "        labels = (A @ self.W2 + self.b2).argmax(axis=1)\n"
        "        return labels if len(X) <= 64 else labels.astype(np.float64)",
    )
    result = grade(write_submission(tmp_path, source), **TINY)
    assert result.reason == (
        "predict returned shape (10000,) dtype float64 on the 10000 test images, "
        "expected (10000,) ints"
    )


def test_the_submission_gets_copies_of_the_graders_data(tmp_path: Path) -> None:
    scribble = """
    class NeuralNetwork(NeuralNetwork):
        def forward(self, X):
            if not np.any(X, axis=1).all():
                raise ValueError("an image the grader passed earlier was overwritten")
            probs = super().forward(X)
            if len(X) > 64:
                X[...] = 0  # a careless submission using its input as scratch space
            return probs

        def predict(self, X):
            labels = super().predict(X)
            X[...] = 0
            return labels
    """
    source = LAB + textwrap.dedent(scribble)
    result = grade(write_submission(tmp_path, source), **{**TINY, "epochs": 2})
    assert result.passed, result.reason
    assert len(result.epochs) == 2 and result.epochs[1]["val_accuracy"] > 0.5


@pytest.mark.parametrize(
    "bad",
    [
        ["--val-fraction", "1.0"],
        ["--val-fraction", "1.5"],
        ["--val-fraction", "-0.2"],
        ["--min-accuracy", "2"],
        ["--min-accuracy", "-0.1"],
        ["--epochs", "0"],
        ["--batch-size", "-1"],
        ["--train-size", "0"],
        ["--time-limit", "0"],
        ["--memory-mb", "0"],
        ["--seed", "-1"],
    ],
)
def test_bad_grader_arguments_are_refused_before_grading(
    bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["lab", "grade", *bad])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran
    assert len(captured.err.strip().splitlines()) == 1 and bad[0] in captured.err


@pytest.mark.parametrize(
    "bad",
    [
        dict(val_fraction=1.0),
        dict(min_accuracy=2.0),
        dict(epochs=0),
        dict(batch_size=0),
        dict(train_size=0),
        dict(time_limit=0.0),
        dict(memory_mb=0),
    ],
)
def test_grade_checks_its_arguments(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        grade(write_submission(tmp_path, LAB), **bad)


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
    result = grade(ANSWER_SOURCE, **protocol, min_accuracy=required)
    assert result.passed, result.reason
    assert result.seconds is not None and result.seconds < 120
    assert result.peak_mb is not None and result.peak_mb < 2048
