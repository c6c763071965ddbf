"""Run a lab child process (grader or checker) and read its report, within limits.

The child runs in a session and process group of its own, gets the write end of a
private pipe (``result_fd`` in its JSON config) and writes JSON lines to it; the
grader hands it its data on standard input. The parent reads both pipes itself,
in bounded memory: a result line longer than ``max_line`` bytes ends the run, and
only the last few kilobytes of standard error are kept. Ten times a second it
adds up the memory of every process that belongs to the child
(:mod:`handgrad.lab._procs`) and ends the run past the cap. Past the time limit,
when the child ends, when the report breaks the protocol, and when this process
is stopped by SIGINT, SIGTERM or SIGHUP, every process of the child is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from handgrad.lab._procs import HAVE_PROC, family, kill_all, memory_mb

#: Signs in the child's last words that an allocation failed under the memory cap.
_OUT_OF_MEMORY = ("MemoryError", "Cannot allocate memory", "out of memory", "bad_alloc")
#: How much of the child's standard error is kept: its last words, not a flood.
_STDERR_KEEP = 8192
#: How often the child's processes and their memory are looked at, in seconds.
_POLL = 0.1


class ProtocolViolation(Exception):
    """Raised by a ``take`` callback: the report broke the protocol; the run ends."""


@dataclass
class ChildEnd:
    """How the child ended: its exit status (negative: a signal), or a limit."""

    code: int
    timed_out: bool
    tail: list[str]  # its last lines on stderr
    violation: str = ""  # why the report was refused, if it was
    memory_exceeded: float | None = None  # MB its processes held when killed for it
    peak_mb: float | None = None  # the most its processes held together, as measured here
    processes: int = 1  # the most processes it had at once


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


def _reap(proc: subprocess.Popen[bytes]) -> float | None:
    """Wait for the child; return the largest resident set of it and what it waited for, MB."""
    if proc.returncode is not None or not hasattr(os, "wait4"):
        proc.wait()
        return None
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:
        proc.wait()
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes there, KiB on Linux
    return usage.ru_maxrss / scale


class _Interrupted(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_end_the_child() -> Iterator[None]:
    """While the child runs, SIGTERM and SIGHUP unwind through the code that kills it.

    Only where they would kill this process outright (the default action, in the
    main thread); afterwards the signal is sent again, so this process ends as
    it would have. A handler of the caller's own is left to do its work.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise _Interrupted(signum)

    wanted = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    old = {s: signal.getsignal(s) for s in wanted}
    for s in wanted:
        if old[s] == signal.SIG_DFL:
            signal.signal(s, interrupt)
    received = None
    try:
        yield
    except _Interrupted as exc:
        received = exc.signum
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if received is not None:
        os.kill(os.getpid(), received)
        raise SystemExit(128 + received)  # not reached: the signal's default action ends us


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
    *,
    payload: Sequence[Any] = (),
    uid: int | None = None,
    memory_limit_mb: float | None = None,
    max_line: int = 1 << 20,
) -> ChildEnd:
    """Run ``python -m module CONFIG_JSON``; hand each line it reports to ``take``.

    ``env``: variables to set in the child's environment, over this one's.
    ``payload``: buffers written to its standard input, in order (from a thread).
    ``uid``: the user id the child will switch to, so that its processes are known
    by it. ``memory_limit_mb``: kill it when its processes together hold more.
    ``take`` may raise :class:`ProtocolViolation`, which ends the run.
    """
    with _signals_end_the_child():
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    module,
                    json.dumps({**cfg, "result_fd": write_fd, "parent_pid": os.getpid()}),
                ],
                stdin=subprocess.PIPE if payload else subprocess.DEVNULL,
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
        writer = None
        if payload:
            writer = threading.Thread(target=_feed, args=(proc.stdin, payload), daemon=True)
            writer.start()
        end = ChildEnd(code=0, timed_out=False, tail=[])
        seen: dict[int, int] = {}  # every process of the child's, by pid and start time
        try:
            _supervise(proc, read_fd, time_limit, take, uid, memory_limit_mb, max_line, end, seen)
        finally:
            kill_all(proc.pid, uid, seen)  # whatever the submission started dies with it
            maxrss = _reap(proc)
            if maxrss is not None:
                end.peak_mb = max(end.peak_mb or 0.0, maxrss)
            end.code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
            if writer is not None:
                writer.join(timeout=2.0)
            assert proc.stderr is not None
            proc.stderr.close()
        return end


def _feed(stream: Any, payload: Sequence[Any]) -> None:
    """Write the payload to the child's standard input; a child that stops reading ends it."""
    try:
        with stream:
            for part in payload:
                stream.write(part)
    except OSError:  # BrokenPipeError: it exited or was killed
        pass


def _supervise(
    proc: subprocess.Popen[bytes],
    read_fd: int,
    time_limit: float,
    take: Callable[[bytes], None],
    uid: int | None,
    memory_limit_mb: float | None,
    max_line: int,
    end: ChildEnd,
    seen: dict[int, int],
) -> None:
    """Read the child's report until it exits, breaks a rule, or its time is up.

    ``seen`` gathers every process found to be the child's, for :func:`kill_all`.
    """
    assert proc.stderr is not None
    err_fd = proc.stderr.fileno()
    sel = selectors.DefaultSelector()
    for fd in (read_fd, err_fd):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    line = bytearray()
    err = bytearray()
    deadline = time.monotonic() + time_limit
    next_poll = 0.0
    drain_until = None  # once the child has exited: read what is left, for a moment

    def reads() -> None:
        if not sel.get_map():  # both pipes closed, the child perhaps still running
            time.sleep(_POLL)
            return
        for key, _ in sel.select(timeout=_POLL):
            try:
                chunk = os.read(key.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:  # every writer is gone
                sel.unregister(key.fd)
                if key.fd == read_fd and line:
                    take(bytes(line))
                    line.clear()
            elif key.fd == err_fd:
                err.extend(chunk)
                if len(err) > 2 * _STDERR_KEEP:
                    del err[:-_STDERR_KEEP]
            else:
                line.extend(chunk)
                while (cut := line.find(b"\n")) >= 0:
                    take(bytes(line[:cut]))
                    del line[: cut + 1]
                if len(line) > max_line:
                    raise ProtocolViolation(
                        f"a line of more than {max_line} bytes on the result pipe"
                    )

    try:
        while True:
            now = time.monotonic()
            if drain_until is None and now >= deadline:
                end.timed_out = True
                return
            if drain_until is not None and (now >= drain_until or not sel.get_map()):
                return  # all read, or a process that escaped us holds a pipe open
            if now >= next_poll and HAVE_PROC:
                next_poll = now + _POLL
                found = family(proc.pid, uid)
                seen.update(found)
                pids = list(found)
                held = memory_mb(pids)
                end.processes = max(end.processes, len(pids))
                end.peak_mb = max(end.peak_mb or 0.0, held)
                if memory_limit_mb is not None and held > memory_limit_mb:
                    end.memory_exceeded = held
                    return
            if drain_until is None and _exited(proc):
                kill_all(proc.pid, uid, seen)
                drain_until = time.monotonic() + 2.0
            reads()
    except ProtocolViolation as exc:
        end.violation = str(exc)
    finally:
        sel.close()
        os.close(read_fd)
        tail = err[-_STDERR_KEEP:].decode("utf-8", "replace").splitlines()
        end.tail = [t.strip() for t in tail[-20:]]
