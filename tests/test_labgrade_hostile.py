"""Hostile lab submissions: each is refused with a clear reason, or documented as out of scope.

Where the grader runs as root on Linux (CI does), the child runs as a user id of
its own in a mount namespace where the MNIST files are hidden; the tests of the
plain path (``grader.ISOLATE = False``, as on a machine where the grader is not
root) say what that path does and does not stop. See "The grader" in docs/lab.md.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from handgrad.data.mnist import SHIPPED_DIR
from handgrad.lab import ANSWER_SOURCE, grade
from handgrad.lab import grader as grader_module
from handgrad.lab.grader import isolation_available

LAB = ANSWER_SOURCE.read_text()
TINY = dict(train_size=1500, epochs=1, val_fraction=0.2, min_accuracy=0.5, time_limit=60)
HAVE_PROC = Path("/proc/self/stat").exists()
ISOLATED = isolation_available()
needs_isolation = pytest.mark.skipif(
    not ISOLATED, reason="isolation needs Linux and the grader running as root"
)
needs_proc = pytest.mark.skipif(not HAVE_PROC, reason="needs /proc")
RESULT_FD = "json.loads(sys.argv[1])['result_fd']"
LABELS = str(SHIPPED_DIR / "t10k-labels-idx1-ubyte.gz")
IMAGES = str(SHIPPED_DIR / "t10k-images-idx3-ubyte.gz")


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """The grader as it runs where it is not root: no user id or mount namespace of its own."""
    monkeypatch.setattr(grader_module, "ISOLATE", False)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory an isolated child may write to (pytest's tmp_path is 0700, root's)."""
    path = Path(tempfile.mkdtemp(prefix="handgrad-lab-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "submission.py"
    path.write_text(textwrap.dedent(source))
    return path


def _state(pid: int) -> str:
    """The process's state letter ("Z"/"X": exited; "": gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ""


def _gone(pid: int) -> bool:
    return _state(pid) in ("", "Z", "X")


def _descendants(pid: int) -> set[int]:
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()
                parents[int(name)] = int(stat[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


# -- forged results -----------------------------------------------------------------------


def test_a_file_with_no_class_that_forges_a_result_line_fails(tmp_path: Path) -> None:
    forge = f"""
    import base64, json, os, sys
    done = {{"event": "done", "predictions": base64.b64encode(bytes(80000)).decode()}}
    os.write({RESULT_FD}, (json.dumps(done) + "\\n").encode())
    os._exit(0)
    """
    result = grade(_write(tmp_path, forge), **TINY)
    assert not result.passed and result.test_accuracy is None
    assert result.reason == (
        "the grader's result pipe carried something it did not send ('done' after 0 of 1 "
        "epochs); did the submission write to it?"
    )


_FROM_THE_FILE = f"""
class NeuralNetwork(NeuralNetwork):
    def predict(self, X):
        if len(X) < 10000:
            return super().predict(X)
        import gzip
        with gzip.open({LABELS!r}) as f:
            return np.frombuffer(f.read()[8:], dtype=np.uint8).astype(np.int64)
"""


@needs_isolation
def test_predictions_read_from_the_shipped_labels_cannot_be_read(tmp_path: Path) -> None:
    result = grade(_write(tmp_path, LAB + _FROM_THE_FILE), **TINY)
    assert not result.passed and result.test_accuracy is None
    assert result.reason.startswith("submission raised FileNotFoundError")
    assert "t10k-labels-idx1-ubyte.gz" in result.reason


def test_predictions_read_from_the_shipped_labels_meet_a_secret_order(
    tmp_path: Path, plain: None
) -> None:
    """Without isolation the file is readable, but the test images come in a secret order."""
    result = grade(_write(tmp_path, LAB + _FROM_THE_FILE), **{**TINY, "min_accuracy": 0.5})
    assert not result.passed and result.test_accuracy is not None
    assert result.test_accuracy < 0.2  # chance: the labels of other images
    assert result.reason.startswith("test accuracy")


_MATCHED = f"""
class NeuralNetwork(NeuralNetwork):
    def predict(self, X):
        if len(X) < 10000:
            return super().predict(X)
        import gzip
        with gzip.open({IMAGES!r}) as f:
            images = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 784)
        with gzip.open({LABELS!r}) as f:
            labels = np.frombuffer(f.read()[8:], dtype=np.uint8)
        known = {{img.tobytes(): int(y) for img, y in zip(images, labels)}}
        pixels = np.rint(np.asarray(X).reshape(len(X), -1) * 255).astype(np.uint8)
        return np.array([known.get(p.tobytes(), 0) for p in pixels], dtype=np.int64)
"""


def test_out_of_scope_without_isolation_matching_the_image_file_forges_the_grade(
    tmp_path: Path, plain: None
) -> None:
    """Documents the limit (docs/lab.md, "What it does not stop"): where the grader is not
    root, a submission that reads the test images and labels from disk and looks each image
    up passes at 100%. Isolated, the same file cannot read them (the test above)."""
    result = grade(_write(tmp_path, LAB + _MATCHED), **TINY)
    assert result.passed, result.reason
    assert result.test_accuracy is not None and result.test_accuracy > 0.99


# -- the grader's own process -----------------------------------------------------------


@needs_isolation
@pytest.mark.parametrize("sig", ["SIGSTOP", "SIGKILL"])
def test_the_submission_cannot_stop_or_kill_the_grader(tmp_path: Path, sig: str) -> None:
    attack = f"import os, signal\nos.kill(os.getppid(), signal.{sig})\n"
    start = time.monotonic()
    result = grade(_write(tmp_path, attack + LAB), **{**TINY, "time_limit": 20})
    assert time.monotonic() - start < 20
    assert result.reason == (
        "submission raised PermissionError on import: [Errno 1] Operation not permitted"
    )


@needs_proc
def test_out_of_scope_without_isolation_the_submission_can_stop_the_grader(
    tmp_path: Path,
) -> None:
    """Documents the limit: where the grader is not root, the child runs as the same user
    and can stop it. Killing the stopped grader still takes the child with it (Linux's
    parent-death signal), so nothing untrusted is left running."""
    submission = _write(tmp_path, "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n")
    script = (
        "import sys\nfrom handgrad.lab import grader\ngrader.ISOLATE = False\n"
        f"grader.grade({str(submission)!r}, train_size=300, epochs=1, time_limit=5)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(300):
            if _state(proc.pid) == "T":
                break
            time.sleep(0.1)
        assert _state(proc.pid) == "T", "the child did not stop the grader"
        children = _descendants(proc.pid)
        time.sleep(6)  # past the time limit: nothing enforces it on a stopped grader
        assert _state(proc.pid) == "T"
    finally:
        proc.kill()
        proc.wait()
    for _ in range(50):
        if all(_gone(pid) for pid in children):
            break
        time.sleep(0.1)
    assert all(_gone(pid) for pid in children)


_SLEEPER = """
import subprocess, sys, time
_sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
"""


@needs_proc
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGKILL"])
def test_ending_the_grader_ends_the_submission(tmp_path: Path, sig: str) -> None:
    source = _SLEEPER + LAB.replace(
        '        """One forward and backward pass on a mini-batch; returns the loss."""\n',
        '        """One forward and backward pass on a mini-batch; returns the loss."""\n'
        "        time.sleep(300)\n",
    )
    submission = _write(tmp_path, source)
    grading = subprocess.Popen(
        [sys.executable, "-m", "handgrad", "lab", "grade", str(submission), "--train-size", "300"],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):  # the child and the sleeper it started
            started = _descendants(grading.pid)
            if len(started) >= 2 and any("time.sleep(300)" in _cmdline(p) for p in started):
                break
            time.sleep(0.1)
        assert len(started) >= 2
        grading.send_signal(getattr(signal, sig))
        code = grading.wait(timeout=30)
    finally:
        grading.kill()
    assert code == -getattr(signal, sig)
    for _ in range(50):
        if all(_gone(pid) for pid in started):
            break
        time.sleep(0.1)
    if sig == "SIGKILL" and not ISOLATED:
        pytest.skip("out of scope: a SIGKILLed grader that is not root cannot end the sleeper")
    left = [p for p in started if not _gone(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{sig} to the grader left {len(left)} of the submission's processes"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# -- bounded reading ----------------------------------------------------------------------


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_flood_without_a_newline_on_the_result_pipe_is_cut_short(tmp_path: Path) -> None:
    flood = f"""
    import json, os, sys
    _chunk = b"x" * (1 << 20)
    for _ in range(3072):  # 3 GB without a newline
        os.write({RESULT_FD}, _chunk)
    """
    before = _max_rss_mb()
    start = time.monotonic()
    result = grade(_write(tmp_path, textwrap.dedent(flood) + LAB), **TINY)
    assert time.monotonic() - start < 30
    assert not result.passed
    assert result.reason.startswith("a line of more than ")
    assert result.reason.endswith(" bytes on the result pipe")
    assert _max_rss_mb() - before < 200


def test_a_flood_without_a_newline_on_stderr_is_kept_short(tmp_path: Path) -> None:
    flood = """
    import os
    _chunk = b"y" * (1 << 20)
    for _ in range(1024):  # 1 GB without a newline
        os.write(2, _chunk)
    os._exit(3)
    """
    before = _max_rss_mb()
    result = grade(_write(tmp_path, textwrap.dedent(flood) + LAB), **TINY)
    assert not result.passed
    assert result.reason.startswith("submission crashed (exit code 3): yyyy")
    assert len(result.reason) < 600
    assert _max_rss_mb() - before < 200


def test_fake_epoch_lines_end_the_run_at_the_first_extra_one(tmp_path: Path) -> None:
    fake = f"""
    import json, os, sys
    _line = json.dumps({{"event": "epoch", "epoch": 1, "train_loss": 0.1}}).encode() + b"\\n"
    for _ in range(300000):
        os.write({RESULT_FD}, _line)
    """
    out = io.StringIO()
    result = grade(_write(tmp_path, textwrap.dedent(fake) + LAB), **TINY, out=out)
    assert not result.passed and result.epochs == []
    assert result.reason.startswith("the grader's result pipe carried something it did not send")
    assert len(out.getvalue().splitlines()) < 5


# -- memory of every process --------------------------------------------------------------


@needs_proc
def test_memory_of_forked_children_counts_against_the_cap(tmp_path: Path) -> None:
    fork = """
    import os, time
    import numpy as np
    for _ in range(4):
        if os.fork() == 0:
            _hoard = np.ones(20_000_000)  # 160 MB each, under the per-process cap
            time.sleep(60)
            os._exit(0)
    time.sleep(60)
    """
    start = time.monotonic()
    result = grade(_write(tmp_path, textwrap.dedent(fork) + LAB), **{**TINY, "memory_mb": 512})
    assert time.monotonic() - start < 30
    assert not result.passed
    assert result.reason.startswith("memory limit exceeded (512 MB): the submission's ")
    assert result.peak_mb is not None and result.peak_mb > 512
    assert result.processes >= 4


@needs_proc
def test_the_peak_memory_is_measured_by_the_grader(tmp_path: Path) -> None:
    lie = "import resource\nresource.getrusage = lambda who: None\n"
    hoard = LAB.replace(
        "        self._t = 0\n", "        self._t = 0\n        self.hoard = np.ones(40_000_000)\n"
    )
    result = grade(_write(tmp_path, lie + hoard), **TINY)
    assert result.passed, result.reason
    assert result.peak_mb is not None and result.peak_mb > 320  # the 305 MB hoard and more
    assert result.seconds is not None and result.seconds > 0


# -- isolation ----------------------------------------------------------------------------


@needs_isolation
def test_the_isolated_child_runs_as_its_own_user_with_the_standard_library(
    tmp_path: Path,
) -> None:
    probe = f"""
    import os, resource
    import email.mime.text, sqlite3, decimal, fractions  # not loaded before isolation
    assert os.getuid() != 0 and os.getgid() != 0 and os.getgroups() == []
    try:
        open({LABELS!r}, "rb")
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("the test labels are readable")
    try:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
    except ValueError:
        pass
    else:
        raise AssertionError("the memory cap could be lifted")
    """
    result = grade(_write(tmp_path, textwrap.dedent(probe) + LAB), **TINY)
    assert result.passed, result.reason
    assert result.isolation[0].startswith("user id ")
    assert result.isolation[1].startswith("the MNIST files hidden")


def test_without_isolation_the_grade_says_so(tmp_path: Path, plain: None) -> None:
    out = io.StringIO()
    result = grade(_write(tmp_path, LAB), **TINY, out=out)
    assert result.passed, result.reason
    assert result.isolation == ["none"]
    assert "submission not isolated (the grader is not root on Linux)" in out.getvalue()


def test_predictions_outside_the_classes_are_refused(tmp_path: Path) -> None:
    shifted = """
class NeuralNetwork(NeuralNetwork):
    def predict(self, X):
        return super().predict(X) + (len(X) >= 10000) * 10
"""
    result = grade(_write(tmp_path, LAB + shifted), **TINY)
    assert not result.passed and result.test_accuracy is None
    assert result.reason.startswith("predict returned labels from 1")
    assert result.reason.endswith("on the 10000 test images, expected classes 0..9")
