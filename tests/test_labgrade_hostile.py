"""Hostile lab submissions: each is refused with a clear reason, or documented as out of scope.

Where the grader runs as root on Linux (CI does), the child runs as a user id of
its own in a mount namespace where the MNIST files are hidden; the tests of the
plain path (``grader.ISOLATE = False``, as on a machine where the grader is not
root) say what that path does and does not stop. See "The grader" in docs/lab.md.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import handgrad
from handgrad.data.mnist import SHIPPED_DIR
from handgrad.lab import ANSWER_SOURCE, grade
from handgrad.lab import grader as grader_module
from handgrad.lab._isolate import checkouts
from handgrad.lab.grader import isolation_available
from tests.conftest import write_submission

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


def _checkout() -> Path | None:
    """The git work tree handgrad is imported from, or else these tests' (CI installs the
    package from its clone with ``pip install .``, then runs the clone's tests)."""
    for start in (Path(handgrad.__file__), Path(__file__)):
        start = start.resolve().parent
        found = next((d for d in (start, *start.parents) if (d / ".git").exists()), None)
        if found is not None:
            return found
    return None


CHECKOUT = _checkout()


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """The grader as it runs where it is not root: no user id or mount namespace of its own."""
    monkeypatch.setattr(grader_module, "ISOLATE", False)


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
    result = grade(write_submission(tmp_path, forge), **TINY)
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
    result = grade(write_submission(tmp_path, LAB + _FROM_THE_FILE), **TINY)
    assert not result.passed and result.test_accuracy is None
    assert result.reason.startswith("submission raised FileNotFoundError")
    assert "t10k-labels-idx1-ubyte.gz" in result.reason


def test_predictions_read_from_the_shipped_labels_meet_a_secret_order(
    tmp_path: Path, plain: None
) -> None:
    """Without isolation the file is readable, but the test images come in a secret order."""
    result = grade(
        write_submission(tmp_path, LAB + _FROM_THE_FILE), **{**TINY, "min_accuracy": 0.5}
    )
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
    result = grade(write_submission(tmp_path, LAB + _MATCHED), **TINY)
    assert result.passed, result.reason
    assert result.test_accuracy is not None and result.test_accuracy > 0.99


@needs_isolation
def test_out_of_scope_isolated_a_copy_of_mnist_anyone_may_read_forges_the_grade(
    tmp_path: Path, open_dir: Path
) -> None:
    """Documents the limit: isolated, the child cannot read the MNIST directories the grader
    knows of, nor the git work trees around handgrad; a copy elsewhere that anyone may read
    (here, a world-readable directory in /tmp) is as readable to it as to anyone."""
    for path in (IMAGES, LABELS):
        shutil.copy(path, open_dir)
        (open_dir / Path(path).name).chmod(0o644)
    copied = _MATCHED.replace(str(SHIPPED_DIR), str(open_dir))
    result = grade(write_submission(tmp_path, LAB + copied), **TINY)
    assert result.isolation[0].startswith("user id ")
    assert result.passed, result.reason
    assert result.test_accuracy is not None and result.test_accuracy > 0.99


# -- the grader's own process -----------------------------------------------------------


@needs_isolation
@pytest.mark.parametrize("sig", ["SIGSTOP", "SIGKILL"])
def test_the_submission_cannot_stop_or_kill_the_grader(tmp_path: Path, sig: str) -> None:
    attack = f"import os, signal\nos.kill(os.getppid(), signal.{sig})\n"
    start = time.monotonic()
    result = grade(write_submission(tmp_path, attack + LAB), **{**TINY, "time_limit": 20})
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
    submission = write_submission(
        tmp_path, "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n"
    )
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
#: The lab file, stuck in its first training step once its contract has been checked.
_STUCK = LAB.replace(
    '        """One forward and backward pass on a mini-batch; returns the loss."""\n',
    '        """One forward and backward pass on a mini-batch; returns the loss."""\n'
    "        import time\n"
    "        time.sleep(300)\n",
)


def _start_grader(submission: Path, isolated: bool, stderr: Path) -> subprocess.Popen[bytes]:
    """``handgrad lab grade`` in a process of its own, isolated or not, that Ctrl-C interrupts
    as at a terminal (a shell ignores SIGINT in what it starts in the background)."""
    script = (
        "import signal, sys\n"
        "from handgrad.cli import main\n"
        "from handgrad.lab import grader\n"
        f"grader.ISOLATE = {isolated}\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        # as from a terminal: under nohup (or a CI runner that ignores SIGHUP) the grader
        # would rightly keep an inherited SIG_IGN, and SIGHUP would end nothing
        "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
        f"sys.exit(main(['lab', 'grade', {str(submission)!r}, '--train-size', '300']))\n"
    )
    with stderr.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=err
        )


def _wait_for(check: Any, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


@needs_proc
@pytest.mark.parametrize(
    "isolated",
    [pytest.param(True, marks=needs_isolation, id="isolated"), pytest.param(False, id="plain")],
)
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_ending_the_grader_ends_the_submission(tmp_path: Path, sig: str, isolated: bool) -> None:
    """However the grader ends (Ctrl-C, SIGTERM, SIGHUP, SIGKILL), isolated or not, the
    submission and a process it started with a plain ``subprocess.Popen`` end with it."""
    grading = _start_grader(
        write_submission(tmp_path, _SLEEPER + _STUCK), isolated, tmp_path / "err"
    )
    started: set[int] = set()
    try:

        def running() -> bool:  # the child and the sleeper it started
            started.update(_descendants(grading.pid))
            return any("time.sleep(300)" in _cmdline(p) for p in started) and any(
                _state(p) == "S" and "_runner" in _cmdline(p) for p in started
            )

        assert _wait_for(running), (tmp_path / "err").read_text()
        time.sleep(0.5)  # into the training step
        started.update(_descendants(grading.pid))
        grading.send_signal(getattr(signal, sig))
        code = grading.wait(timeout=30)
    finally:
        grading.kill()
        grading.wait()
    if sig == "SIGINT":
        assert code == 130
        assert (tmp_path / "err").read_text().endswith("handgrad lab: interrupted\n")
    else:
        assert code == -getattr(signal, sig)
    _wait_for(lambda: all(_gone(pid) for pid in started), 5.0)
    left = [p for p in started if not _gone(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{sig} to the grader left {len(left)} of the submission's processes"


@needs_proc
def test_out_of_scope_without_isolation_a_new_session_outlives_a_sigkilled_grader(
    tmp_path: Path,
) -> None:
    """Documents the limit (docs/lab.md, "What it does not stop"): where the grader is not
    root and is SIGKILLed, the reaper kills the child's session and process group and their
    descendants; a process the child started in a session of its own is none of these once
    the child is dead. Ended any other way, the grader kills it (it is the child's
    descendant); isolated, the reaper kills it by its user id."""
    pid_file = tmp_path / "escaped.pid"
    escape = f"""
import subprocess, sys
_escaped = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
)
open({str(pid_file)!r}, "w").write(str(_escaped.pid))
"""
    grading = _start_grader(write_submission(tmp_path, escape + _STUCK), False, tmp_path / "err")
    escaped = 0
    try:
        assert _wait_for(lambda: pid_file.exists() and pid_file.read_text().isdigit())
        escaped = int(pid_file.read_text())
        runners = [p for p in _descendants(grading.pid) if "_runner" in _cmdline(p)]
        grading.kill()
        grading.wait()
        # the child, and the reaper (a fork of it) once it has done its work
        assert _wait_for(lambda: all(_gone(p) for p in runners), 10.0)
        assert not _gone(escaped), "the process in a session of its own was killed after all"
    finally:
        grading.kill()
        grading.wait()
        if escaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(escaped, signal.SIGKILL)


@needs_proc
def test_out_of_scope_without_isolation_the_submission_can_kill_your_processes(
    tmp_path: Path, plain: None
) -> None:
    """Documents the limit: where the grader is not root, the child runs as you and may
    signal any process of yours. Isolated, it may signal none (see the grader's own test)."""
    yours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        attack = f"import os, signal\nos.kill({yours.pid}, signal.SIGKILL)\n"
        result = grade(write_submission(tmp_path, attack + LAB), **TINY)
        assert result.passed, result.reason
        assert yours.wait(timeout=5) == -signal.SIGKILL
    finally:
        yours.kill()
        yours.wait()


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
    result = grade(write_submission(tmp_path, textwrap.dedent(flood) + LAB), **TINY)
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
    result = grade(write_submission(tmp_path, textwrap.dedent(flood) + LAB), **TINY)
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
    result = grade(write_submission(tmp_path, textwrap.dedent(fake) + LAB), **TINY, out=out)
    assert not result.passed and result.epochs == []
    assert result.reason == (
        "the grader's result pipe carried something it did not send (expected the validation "
        "probabilities, 'val_probs', in each epoch line; this one has none); did the "
        "submission write to it?"
    )
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
    result = grade(
        write_submission(tmp_path, textwrap.dedent(fork) + LAB), **{**TINY, "memory_mb": 512}
    )
    assert time.monotonic() - start < 30
    assert not result.passed
    assert result.reason.startswith("memory limit exceeded (512 MB): the submission's ")
    assert result.peak_mb is not None and result.peak_mb > 512
    assert result.processes >= 4


@needs_proc
def test_memory_of_processes_in_sessions_of_their_own_counts_against_the_cap(
    tmp_path: Path, plain: None
) -> None:
    """Not isolated (isolated, every process of the child's user id counts): four processes
    that start sessions of their own and whose parents exit, holding 160 MB each, are still
    counted (the child adopts them: ``PR_SET_CHILD_SUBREAPER``) and killed at the end."""
    pids = tmp_path / "pids"
    pids.mkdir()
    escape = f"""
    import os, time
    import numpy as np
    for _ in range(4):
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open(os.path.join({str(pids)!r}, str(os.getpid())), "w").close()
                _hoard = np.ones(20_000_000)  # 160 MB
                time.sleep(60)
            os._exit(0)
    time.sleep(60)
    """
    start = time.monotonic()
    try:
        result = grade(
            write_submission(tmp_path, textwrap.dedent(escape) + LAB),
            **{**TINY, "memory_mb": 512, "time_limit": 30},
        )
        assert time.monotonic() - start < 25, result.reason
        assert result.reason.startswith("memory limit exceeded (512 MB): the submission's ")
        escaped = [int(p.name) for p in pids.iterdir()]
        assert escaped and _wait_for(lambda: all(_gone(pid) for pid in escaped), 5.0)
    finally:
        for p in pids.iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(p.name), signal.SIGKILL)


@needs_proc
def test_the_peak_memory_is_measured_by_the_grader(tmp_path: Path) -> None:
    lie = "import resource\nresource.getrusage = lambda who: None\n"
    hoard = LAB.replace(
        "        self._t = 0\n", "        self._t = 0\n        self.hoard = np.ones(40_000_000)\n"
    )
    result = grade(write_submission(tmp_path, lie + hoard), **TINY)
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
    result = grade(write_submission(tmp_path, textwrap.dedent(probe) + LAB), **TINY)
    assert result.passed, result.reason
    assert result.isolation[0].startswith("user id ")
    assert result.isolation[1].startswith("the MNIST files hidden")


@needs_isolation
def test_the_isolated_child_cannot_reach_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its ``.git`` holds the MNIST test files in every commit; its other files are not
    the child's business either. Only what the interpreter reads (a ``.venv``) is left.
    The grader is started in the checkout, as CI starts it (the package may be installed
    elsewhere); without one, the test files must still be out of reach."""
    checkout = str(CHECKOUT) if CHECKOUT else None
    if CHECKOUT is not None:
        monkeypatch.chdir(CHECKOUT)
    probe = f"""
    import os
    import numpy.polynomial, numpy.ma  # NumPy loads these lazily, from site-packages
    for path in [{LABELS!r}, {IMAGES!r}]:
        if os.path.exists(path):
            raise AssertionError(f"{{path}} is reachable")
    if {checkout!r} is not None:
        for name in (".git", "pyproject.toml", "README.md", "tests", "docs", "src"):
            if os.path.lexists(os.path.join({checkout!r}, name)):
                raise AssertionError(f"the checkout's {{name}} is reachable")
    """
    result = grade(write_submission(tmp_path, textwrap.dedent(probe) + LAB), **TINY)
    assert result.passed, result.reason
    if CHECKOUT is not None:
        assert any(s.startswith(f"the git work tree {CHECKOUT} hidden") for s in result.isolation)


_GIT_FORGE = """
class NeuralNetwork(NeuralNetwork):
    def predict(self, X):
        if len(X) < 10000:
            return super().predict(X)
        import gzip, subprocess
        def blob(name):
            return subprocess.run(
                ["git", "-c", "safe.directory=*", "--git-dir=" + GIT_DIR,
                 "show", "HEAD:src/handgrad/data/mnist/" + name],
                capture_output=True, check=True).stdout
        images = np.frombuffer(
            gzip.decompress(blob("t10k-images-idx3-ubyte.gz"))[16:], dtype=np.uint8
        ).reshape(-1, 784)
        labels = np.frombuffer(gzip.decompress(blob("t10k-labels-idx1-ubyte.gz"))[8:], np.uint8)
        known = {img.tobytes(): int(y) for img, y in zip(images, labels)}
        pixels = np.rint(np.asarray(X).reshape(len(X), -1) * 255).astype(np.uint8)
        return np.array([known.get(p.tobytes(), 0) for p in pixels], dtype=np.int64)
"""


@needs_isolation
@pytest.mark.skipif(CHECKOUT is None, reason="neither handgrad nor its tests lie in a git checkout")
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_test_files_cannot_be_read_from_the_checkouts_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forgery an audit found: ``git show HEAD:.../t10k-*`` from the checkout's ``.git``,
    each test image looked up, passed at 100% before the work tree was covered."""
    assert CHECKOUT is not None
    monkeypatch.chdir(CHECKOUT)
    git_dir = f"GIT_DIR = {str(CHECKOUT / '.git')!r}\n"
    result = grade(write_submission(tmp_path, git_dir + LAB + _GIT_FORGE), **TINY)
    assert not result.passed and result.test_accuracy is None
    assert result.reason.startswith("submission raised CalledProcessError: Command '['git'")


def test_the_checkouts_to_cover_are_found_above_the_package_and_the_data(tmp_path: Path) -> None:
    """Every git work tree at or above where handgrad and the MNIST files lie, and the
    repository a worktree's or submodule's ``.git`` file points to (its objects are there)."""
    main = tmp_path / "main"
    (main / ".git" / "worktrees" / "wt").mkdir(parents=True)
    (main / ".git" / "worktrees" / "wt" / "commondir").write_text("../..\n")
    (main / "src" / "handgrad").mkdir(parents=True)
    wt = tmp_path / "elsewhere" / "wt"
    (wt / "src" / "handgrad").mkdir(parents=True)
    (wt / ".git").write_text(f"gitdir: {main / '.git' / 'worktrees' / 'wt'}\n")
    sub = tmp_path / "super" / "lib" / "handgrad"
    (tmp_path / "super" / ".git" / "modules" / "handgrad").mkdir(parents=True)
    (sub / "data").mkdir(parents=True)
    (sub / ".git").write_text("gitdir: ../../.git/modules/handgrad\n")
    data = tmp_path / "data" / "mnist"
    data.mkdir(parents=True)
    real = str(tmp_path.resolve())
    assert checkouts([str(main / "src" / "handgrad")]) == [f"{real}/main"]
    assert checkouts([str(wt / "src" / "handgrad")]) == [f"{real}/elsewhere/wt", f"{real}/main"]
    assert checkouts([str(sub / "data")]) == [f"{real}/super"]
    assert not [p for p in checkouts([str(data)]) if p.startswith(real)]


def test_out_of_scope_without_isolation_removing_the_import_hook_imports_handgrad(
    tmp_path: Path, plain: None
) -> None:
    """Documents the limit: the import hook is a rule for honest code. Taken out of
    ``sys.meta_path``, any module the child's user id can read imports: here handgrad
    itself, which the hook refuses."""
    unhook = """
import sys
sys.meta_path[:] = [m for m in sys.meta_path if type(m).__name__ != "ImportBlocker"]
import handgrad.nn
"""
    result = grade(write_submission(tmp_path, unhook + LAB), **TINY)
    assert result.passed, result.reason
    hooked = grade(write_submission(tmp_path, "import handgrad.nn\n" + LAB), **TINY)
    assert hooked.reason == (
        "submission imports 'handgrad', which is not allowed (NumPy and the standard library only)"
    )


@pytest.mark.parametrize(
    "isolated",
    [pytest.param(True, marks=needs_isolation, id="isolated"), pytest.param(False, id="plain")],
)
def test_out_of_scope_the_submission_writes_where_its_user_may(
    tmp_path: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch, isolated: bool
) -> None:
    """Documents the limit: within the time limit the child may write wherever its user id
    may (isolated, a directory anyone may write to; not isolated, anywhere you may) and what
    it writes stays. The grade is not changed by it."""
    if not isolated:
        monkeypatch.setattr(grader_module, "ISOLATE", False)
    note = open_dir / "left-by-the-submission"
    write = f"open({str(note)!r}, 'w').write('hello')\n"
    result = grade(write_submission(tmp_path, write + LAB), **TINY)
    assert result.passed, result.reason
    assert note.read_text() == "hello"


def test_without_isolation_the_grade_says_so(tmp_path: Path, plain: None) -> None:
    out = io.StringIO()
    result = grade(write_submission(tmp_path, LAB), **TINY, out=out)
    assert result.passed, result.reason
    assert result.isolation == ["none"]
    assert "submission not isolated (the grader is not root on Linux)" in out.getvalue()


def test_predictions_outside_the_classes_are_refused(tmp_path: Path) -> None:
    shifted = """
class NeuralNetwork(NeuralNetwork):
    def predict(self, X):
        return super().predict(X) + (len(X) >= 10000) * 10
"""
    result = grade(write_submission(tmp_path, LAB + shifted), **TINY)
    assert not result.passed and result.test_accuracy is None
    assert result.reason.startswith("predict returned labels from 1")
    assert result.reason.endswith("on the 10000 test images, expected classes 0..9")


@pytest.mark.parametrize("threads", [1, 2])
def test_the_grader_sets_and_states_the_submissions_blas_threads(
    tmp_path: Path, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's BLAS threads are the grader's choice (one by default), whatever the
    grader's own environment says, and the grade says how many."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    probe = f"""
    import os
    _seen = [os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")]
    if _seen != ["{threads}", "{threads}"]:
        raise SystemExit(f"BLAS threads {{_seen}}")
    """
    out = io.StringIO()
    path = write_submission(tmp_path, textwrap.dedent(probe) + LAB)
    result = grade(path, **TINY, threads=threads, out=out)
    assert result.passed, result.reason
    plural = "s" if threads > 1 else ""
    assert f"; NumPy's BLAS on {threads} thread{plural}\n" in out.getvalue()
    with pytest.raises(ValueError, match="threads must be a positive int"):
        grade(path, **TINY, threads=0)
