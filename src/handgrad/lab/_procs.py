"""The parent's view of a lab child's processes: which they are, their memory, killing them.

On Linux the parent reads ``/proc`` itself, so neither the count nor the memory
rests on the child's word. The child's processes are the child, every process
descended from it (the child adopts its descendants' orphans, so a process
whose parent has exited is one of them while the child lives), every process
still in its process group or session (an orphan keeps those), and, when the
child runs as a user id of its own (:mod:`handgrad.lab._isolate`), every
process of that user id. A process is known by its pid and its start time, so
that one seen earlier is killed at the end even after the child has exited, and
a later process given the same pid never is. Elsewhere only the child's process
group is known, and its memory is what ``wait4`` says of the largest process.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

_PROC = "/proc"
HAVE_PROC = sys.platform.startswith("linux") and os.path.isdir(f"{_PROC}/self")


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    pgrp: int
    session: int
    uid: int
    start: int  # clock ticks after boot: with the pid, names one process, never a later one


def _read(pid: int) -> _Proc | None:
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"{_PROC}/{pid}/status", "rb") as f:
            status = f.read()
    except OSError:  # gone, or not ours to read
        return None
    fields = stat.rpartition(b")")[2].split()  # the command name may hold spaces and ")"
    uid = -1
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            uid = int(line.split()[1])  # the real user id
            break
    try:
        if fields[0] in (b"Z", b"X"):  # exited, waiting to be reaped: nothing left to count or kill
            return None
        return _Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]), uid, int(fields[19]))
    except (IndexError, ValueError):
        return None


def family(root: int, uid: int | None) -> dict[int, int]:
    """``{pid: start time}`` of ``root`` and of every process that belongs to it (module doc).

    ``root`` is left out once it has exited; elsewhere than Linux, it is all there is.
    """
    if not HAVE_PROC:
        return {root: 0}
    table = {}
    for name in os.listdir(_PROC):
        if name.isdigit():
            proc = _read(int(name))
            if proc is not None:
                table[proc.pid] = proc
    own = {root}
    for proc in table.values():
        if proc.pgrp == root or proc.session == root or (uid is not None and proc.uid == uid):
            own.add(proc.pid)
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    todo = list(own)
    while todo:  # and everything they started
        for pid in children.get(todo.pop(), []):
            if pid not in own:
                own.add(pid)
                todo.append(pid)
    return {pid: table[pid].start for pid in sorted(own) if pid in table}


def child_processes(root: int, uid: int | None) -> list[int]:
    """The pids of ``root`` and of every process that belongs to it (see the module doc)."""
    return sorted({root, *family(root, uid)})


def memory_mb(pids: list[int]) -> float:
    """The memory of ``pids`` together, in MB: the sum of their proportional set sizes.

    A page that several of them share (after a fork, copy-on-write) counts once
    in the sum, not once per process; where a kernel lacks ``smaps_rollup``, the
    resident sets are summed instead, which counts it again for each.
    """
    total_kb = 0
    for pid in pids:
        try:
            with open(f"{_PROC}/{pid}/smaps_rollup", "rb") as f:
                text = f.read()
            key = b"Pss:"
        except OSError:
            try:
                with open(f"{_PROC}/{pid}/status", "rb") as f:
                    text = f.read()
            except OSError:
                continue
            key = b"VmRSS:"
        for line in text.splitlines():
            if line.startswith(key):
                total_kb += int(line.split()[1])
                break
    return total_kb / 1024


def _same(pid: int, start: int) -> bool:
    """Is the process ``pid`` that started at ``start`` still running (not a later one)?"""
    proc = _read(pid)
    return proc is not None and proc.start == start


def kill_all(root: int, uid: int | None, seen: dict[int, int] | None = None) -> None:
    """SIGKILL the child's group and every process that belongs to it, until none is left.

    ``seen``: ``{pid: start time}`` of processes that belonged to it earlier
    (:func:`family`): once the child has exited, an orphan it had adopted (its
    parent gone, in a session of its own) is nobody's descendant any more.
    """
    known = dict(seen or {})
    try:  # stopped, not dead: the orphans it adopted stay its children while the rest die
        os.kill(root, signal.SIGSTOP)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(50):  # a process that forks as fast as we kill is still caught
        known.update(family(root, uid))
        left = [pid for pid, start in known.items() if pid != root and _same(pid, start)]
        if not HAVE_PROC or not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for _ in range(50):
        for kill, target in ((os.killpg, root), (os.kill, root)):  # root: our unreaped child
            try:
                kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        left = [pid for pid in child_processes(root, uid) if pid != root]
        if not HAVE_PROC or not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
