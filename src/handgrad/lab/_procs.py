"""The parent's view of a lab child's processes: which they are, their memory, killing them.

On Linux the parent reads ``/proc`` itself, so neither the count nor the memory
rests on the child's word. The child's processes are the child, every process
descended from it, every process still in its process group or session (an
orphan keeps those), and, when the child runs as a user id of its own
(:mod:`handgrad.lab._isolate`), every process of that user id, which finds even
a process that started a session of its own and whose parent has exited.
Elsewhere only the child's process group is known, and its memory is what
``wait4`` says of the largest process.
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
        return _Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]), uid)
    except (IndexError, ValueError):
        return None


def child_processes(root: int, uid: int | None) -> list[int]:
    """The pids of ``root`` and of every process that belongs to it (see the module doc)."""
    if not HAVE_PROC:
        return [root]
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
    return sorted(own)


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


def kill_all(root: int, uid: int | None) -> None:
    """SIGKILL the child's group and every process that belongs to it, until none is left."""
    for _ in range(50):  # a process that forks as fast as we kill is still caught
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
