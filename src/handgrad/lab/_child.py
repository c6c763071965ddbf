"""Run a lab child process (grader or checker) and read its report, within a time limit.

The child runs in a session and process group of its own, gets the write end of a
private pipe (``result_fd`` in its JSON config) and writes JSON lines to it. Past
the time limit, and whenever the child ends, the whole group is killed, so a
process the submission started dies with it.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

#: Signs in the child's last words that an allocation failed under the memory cap.
_OUT_OF_MEMORY = ("MemoryError", "Cannot allocate memory", "out of memory", "bad_alloc")


@dataclass
class ChildEnd:
    """How the child ended: its exit status (negative: a signal), or the time limit."""

    code: int
    timed_out: bool
    tail: list[str]  # its last lines on stderr


def _read_lines(stream: IO[bytes], sink: queue.Queue[bytes | None]) -> None:
    with stream:
        for line in stream:
            sink.put(line)
    sink.put(None)


def _read_tail(stream: IO[bytes], tail: collections.deque[str]) -> None:
    with stream:
        for line in stream:
            tail.append(line.decode("utf-8", "replace").strip())


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Has the child exited? Leaves it unreaped, so its pid (= its group's id) stays taken."""
    if not hasattr(os, "waitid"):
        return proc.poll() is not None
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped behind our back (SIGCHLD ignored)
        return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group: the child and anything it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def crash_reason(end: ChildEnd, memory_mb: int) -> str:
    """Why the child ended without a result, from its exit status and last stderr lines."""
    code, tail = end.code, end.tail
    said = " ".join(tail[-2:])[-500:]  # its last words, not a megabyte of them
    if any(sign in line for line in tail for sign in _OUT_OF_MEMORY):
        return f"memory limit exceeded ({memory_mb} MB)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        reason = f"submission crashed: killed by signal {name}"
        if -code == signal.SIGKILL:
            reason += " (not the grader's doing: the system's out-of-memory killer, or a user)"
        return reason
    if code == 0:
        return "submission ended the grading process early (exit code 0)" + (
            f": {said}" if said else ""
        )
    return f"submission crashed (exit code {code}): {said}"


def run_child(
    module: str,
    cfg: dict[str, Any],
    time_limit: float,
    take: Callable[[bytes], None],
    env: dict[str, str] | None = None,
) -> ChildEnd:
    """Run ``python -m module CONFIG_JSON``; hand each line it reports to ``take``.

    ``env``: variables to set in the child's environment, over this one's.
    """
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, json.dumps({**cfg, "result_fd": write_fd})],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(write_fd,),
            start_new_session=True,  # its own process group, killed as a whole
            env=None if env is None else {**os.environ, **env},
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    try:
        return _supervise(proc, read_fd, time_limit, take)
    finally:
        if proc.returncode is None:
            _kill_group(proc)
            proc.wait()


def _supervise(
    proc: subprocess.Popen[bytes], read_fd: int, time_limit: float, take: Callable[[bytes], None]
) -> ChildEnd:
    """Read the child's report until it exits or its time is up."""
    lines: queue.Queue[bytes | None] = queue.Queue()
    tail: collections.deque[str] = collections.deque(maxlen=20)
    reader = threading.Thread(
        target=_read_lines, args=(os.fdopen(read_fd, "rb"), lines), daemon=True
    )
    reader.start()
    assert proc.stderr is not None
    stderr_reader = threading.Thread(target=_read_tail, args=(proc.stderr, tail), daemon=True)
    stderr_reader.start()
    deadline = time.monotonic() + time_limit
    eof = False
    while not _exited(proc):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _kill_group(proc)
            return ChildEnd(code=proc.wait(), timed_out=True, tail=list(tail))
        if eof:
            time.sleep(min(remaining, 0.05))
            continue
        try:
            line = lines.get(timeout=min(remaining, 0.2))
        except queue.Empty:
            continue
        if line is None:
            eof = True
        else:
            take(line)
    _kill_group(proc)  # whatever the submission started dies with it
    code = proc.wait()
    # Every writer is gone now; read what is left (a writer that escaped the group by
    # starting its own session only delays us by the join timeout).
    reader.join(timeout=2.0)
    while not lines.empty():
        line = lines.get()
        if line is not None:
            take(line)
    stderr_reader.join(timeout=2.0)
    return ChildEnd(code=code, timed_out=False, tail=list(tail))
