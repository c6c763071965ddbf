"""Atomic saves under SIGKILL: the destination is always the old or the new model, and
the temporary files a killed writer leaves are removed by the next save of that target,
never while their writer lives."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handgrad import _atomic
from handgrad.nn import Linear, Sequential
from handgrad.serialization import load, load_metadata, save

pytestmark = pytest.mark.skipif(
    _atomic.fcntl is None or not hasattr(signal, "SIGKILL"), reason="POSIX only (flock, SIGKILL)"
)

# A child that builds a ~4 MB model whose every weight is its generation number, times
# one save elsewhere (so the parent knows how long a save takes), says "ready <seconds>",
# then saves to the destination when told to.
SAVER = textwrap.dedent(
    """
    import sys, time
    from handgrad.nn import Linear, Sequential
    from handgrad.serialization import save

    dest, warm, gen = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = Sequential(*[Linear(256, 256, rng=0) for _ in range(16)])
    for p in model.parameters():
        p.data[...] = gen
    start = time.perf_counter()
    save(model, warm)
    print("ready", time.perf_counter() - start, flush=True)
    sys.stdin.readline()
    save(model, dest, metadata={"gen": gen})
    print("saved", flush=True)
    sys.stdin.readline()
    """
)

# A child that stops in the middle of an atomic write and waits.
STALLED_WRITER = textwrap.dedent(
    """
    import sys
    from handgrad._atomic import atomic_open

    with atomic_open(sys.argv[1]) as fh:
        fh.write(b"half of the child's file")
        fh.flush()
        print(fh.name, flush=True)
        sys.stdin.readline()
        fh.write(b", and the rest")
    print("done", flush=True)
    """
)


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def kill(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait(timeout=30)
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            stream.close()


def temps(directory: Path, keep: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


def model_of(gen: int) -> Sequential:
    model = Sequential(*[Linear(256, 256, rng=0) for _ in range(16)])
    for p in model.parameters():
        p.data[...] = gen
    return model


def test_sigkill_during_saves_leaves_the_old_or_the_new_model(tmp_path: Path) -> None:
    """25 savers, each SIGKILLed at a random moment (seeded) around its save."""
    out, warm = tmp_path / "out", tmp_path / "warm"
    out.mkdir()
    warm.mkdir()
    dest = out / "model.npz"
    save(model_of(0), dest, metadata={"gen": 0})
    rng = np.random.default_rng(20240611)
    kills = 25
    current, left_behind, outcomes = 0, 0, {"old": 0, "new": 0}
    children = {1: spawn(SAVER, dest, warm / "1.npz", 1)}
    try:
        for gen in range(1, kills + 1):
            child = children.pop(gen)
            if gen < kills:  # the next one starts up while this one is killed
                children[gen + 1] = spawn(SAVER, dest, warm / f"{gen + 1}.npz", gen + 1)
            assert child.stdout is not None and child.stdin is not None
            word, seconds = child.stdout.readline().split()
            assert word == "ready"
            child.stdin.write("go\n")
            child.stdin.flush()
            time.sleep(rng.uniform(0.0, 1.5 * float(seconds)))
            kill(child)
            found = load_metadata(dest)["gen"]
            assert found in (current, gen), f"kill {gen}: found generation {found}"
            for p in load(dest).parameters():  # the whole model, not only its header
                assert np.all(p.data == found)
            outcomes["new" if found == gen else "old"] += 1
            current = found
            debris = temps(out, "model.npz")
            # Each save first removes what the previous killed one left: never more than one.
            assert len(debris) <= 1, debris
            left_behind += len(debris)
    finally:
        for child in children.values():
            kill(child)
    save(model_of(99), dest, metadata={"gen": 99})
    assert temps(out, "model.npz") == []
    assert load_metadata(dest) == {"gen": 99}
    print(f"outcomes {outcomes}, kills that left a temporary file: {left_behind}")


def test_the_temp_file_of_a_killed_writer_goes_with_the_next_save(tmp_path: Path) -> None:
    dest = tmp_path / "m.npz"
    save(model_of(1), dest, metadata={"gen": 1})
    child = spawn(STALLED_WRITER, dest)
    assert child.stdout is not None
    temp = Path(child.stdout.readline().strip())
    assert temp.parent == tmp_path and temp.name.startswith(".m.npz.")
    assert temp.name.split(".")[-2].split("-")[0] == str(child.pid)  # the writer's pid
    kill(child)
    assert temp.exists() and load_metadata(dest) == {"gen": 1}
    save(model_of(2), dest, metadata={"gen": 2})
    assert temps(tmp_path, "m.npz") == []


def test_a_live_writers_temp_file_is_never_removed(tmp_path: Path) -> None:
    dest = tmp_path / "m.bin"
    child = spawn(STALLED_WRITER, dest)
    try:
        assert child.stdout is not None and child.stdin is not None
        temp = Path(child.stdout.readline().strip())
        _atomic.atomic_write(dest, lambda fh: fh.write(b"the parent's file"))
        assert temp.exists() and dest.read_bytes() == b"the parent's file"
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        assert child.wait(timeout=30) == 0
    finally:
        kill(child)
    assert dest.read_bytes() == b"half of the child's file, and the rest"
    assert temps(tmp_path, "m.bin") == []


@pytest.fixture
def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temp_name(target: str, pid: int, start: str, token: str = "0badcafe") -> str:
    return f".{target}.{pid}-{start}-{token}.tmp"


def test_stale_means_writer_gone_and_lock_free(tmp_path: Path, dead_pid: int) -> None:
    own = _atomic._own_start_time()
    files = {
        "dead, unlocked": _temp_name("m.npz", dead_pid, "123"),
        "alive": _temp_name("m.npz", os.getpid(), own, "00000001"),
        "dead, locked": _temp_name("m.npz", dead_pid, "456", "00000002"),
        "another target": _temp_name("other.npz", dead_pid, "123"),
        "old name": ".m.npz.0badcafe.tmp",
        "not ours": ".m.npz.notes.tmp",
    }
    for name in files.values():
        (tmp_path / name).write_bytes(b"x")
    # Another open file description holds the lock: a writer we cannot see by pid
    # (another pid namespace, say) is still writing it.
    holder = open(tmp_path / files["dead, locked"], "rb")
    try:
        _atomic.fcntl.flock(holder.fileno(), _atomic.fcntl.LOCK_EX)
        removed = _atomic._remove_stale_temps(tmp_path / "m.npz")
    finally:
        holder.close()
    assert [p.name for p in removed] == [files["dead, unlocked"]]
    left = {p.name for p in tmp_path.iterdir()}
    assert left == set(files.values()) - {files["dead, unlocked"]}
    # Once its lock is released, the dead writer's file goes too.
    assert [p.name for p in _atomic._remove_stale_temps(tmp_path / "m.npz")] == [
        files["dead, locked"]
    ]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc start times")
def test_a_recycled_pid_does_not_pass_for_the_writer(tmp_path: Path) -> None:
    """The pid runs (it is this process), but it started at another time: not the writer."""
    own = _atomic._own_start_time()
    assert own != "x"
    stale = tmp_path / _temp_name("m.npz", os.getpid(), str(int(own) + 1))
    stale.write_bytes(b"x")
    _atomic.atomic_write(tmp_path / "m.npz", lambda fh: fh.write(b"new"))
    assert temps(tmp_path, "m.npz") == []


def test_a_symlink_named_like_a_temp_file_is_left_alone(tmp_path: Path, dead_pid: int) -> None:
    precious = tmp_path / "precious"
    precious.write_bytes(b"keep me")
    link = tmp_path / _temp_name("m.npz", dead_pid, "1")
    link.symlink_to(precious)
    _atomic.atomic_write(tmp_path / "m.npz", lambda fh: fh.write(b"new"))
    assert link.is_symlink() and precious.read_bytes() == b"keep me"


def test_the_temp_name_holds_pid_and_start_time(tmp_path: Path) -> None:
    with _atomic.atomic_open(tmp_path / "m.npz") as fh:
        name = Path(fh.name).name
    pid, start, _ = name[len(".m.npz.") : -len(".tmp")].split("-")
    assert pid == str(os.getpid()) and start == _atomic._own_start_time()


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record what os.fsync is called on: "dir" or "file"."""
    calls: list[str] = []
    real = os.fsync

    def fsync(fd: Any) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(_atomic.os, "fsync", fsync)
    yield calls


def test_the_directory_is_fsynced_after_the_rename(tmp_path: Path, fsyncs: list[str]) -> None:
    _atomic.atomic_write(tmp_path / "m.bin", lambda fh: fh.write(b"data"))
    assert fsyncs == ["file", "dir"]


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP])
def test_a_filesystem_that_cannot_fsync_directories_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    real = os.fsync

    def fsync(fd: Any) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(_atomic.os, "fsync", fsync)
    assert _atomic.atomic_write(tmp_path / "m.bin", lambda fh: fh.write(b"x")).read_bytes() == b"x"
