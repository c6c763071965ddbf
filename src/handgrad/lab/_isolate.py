"""Real isolation for a lab child, where the machine allows it: Linux, the grader run as root.

Called by the child (:mod:`handgrad.lab._runner`) after it has read everything
it needs (the submission's source, the images) and before it runs a line of the
submission:

1. a mount namespace of its own (``unshare(CLONE_NEWNS)``, mounts private), in
   which every directory the MNIST files are looked for is covered by an empty
   read-only tmpfs, so the test labels cannot be read, and in which the Python
   installation stays reachable for the new user id (a directory it could not
   enter, such as a 0700 ``/root`` holding a pyenv, is covered by a tmpfs into
   which only the installation is bind-mounted);
2. a user and group id of its own, picked by the parent at random from a range
   no account uses, with no supplementary groups and ``PR_SET_NO_NEW_PRIVS``:
   it can no longer signal the grader, raise its memory limit, read files that
   are not world-readable, or gain privileges through a set-user-ID program.

A third process, the reaper, forked before the switch, stays root and waits; when
the child dies, however it dies (the grader SIGKILLed, and the child with it by
its parent-death signal), it kills every process of the child's user id, so
nothing the submission started outlives it.

Each step that the machine refuses (a container without ``CAP_SYS_ADMIN``
cannot unshare) is left out and reported, never faked.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import stat
import sys
import time
from collections.abc import Iterable

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18

#: The range the parent draws the child's user id from: above any account's.
UID_RANGE = (1_500_000_000, 2_000_000_000)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux), even by SIGKILL; exit if it has."""
    if not sys.platform.startswith("linux"):
        return
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)


def _kill_user(uid: int) -> None:
    """SIGKILL every process of ``uid`` (read from /proc), until none is left."""
    for _ in range(50):
        found = False
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/status", "rb") as f:
                    status = f.read()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith(b"Uid:") and int(line.split()[1]) == uid:
                    with contextlib.suppress(OSError):
                        os.kill(int(name), signal.SIGKILL)
                    found = True
        if not found:
            return


def start_reaper(uid: int) -> None:
    """Fork the reaper (module doc): root, asleep until its parent dies, then it kills ``uid``."""
    parent = os.getpid()
    if os.fork() != 0:
        return
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 65536)  # the result pipe above all: the grader waits for its end
        # Not a parent-death signal: the kernel checks it against the dying parent's
        # credentials, which by then are the submission's user id, not root's.
        while os.getppid() == parent:
            time.sleep(0.2)
        _kill_user(uid)
    finally:
        os._exit(0)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str) -> None:
    _check(
        _libc().mount(
            None if source is None else source.encode(),
            target.encode(),
            None if fstype is None else fstype.encode(),
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _outermost(paths: Iterable[str]) -> list[str]:
    """The existing directories among ``paths``, real paths, none inside another."""
    real = sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)})
    kept: list[str] = []
    for path in real:
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _closed_ancestor(path: str) -> str | None:
    """The topmost directory on the way to ``path`` that others may not enter, if any."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:i])
        if not os.stat(ancestor).st_mode & stat.S_IXOTH:
            return ancestor
    return None


def _keep_reachable(keep: list[str]) -> None:
    """Cover each closed directory above ``keep`` with a tmpfs holding only the kept paths."""
    closed: dict[str, list[str]] = {}
    for path in keep:
        top = _closed_ancestor(path)
        if top is not None:
            closed.setdefault(top, []).append(path)
    for top, paths in closed.items():
        fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in paths]  # before they are covered
        try:
            _mount("tmpfs", top, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
            for path, fd in zip(paths, fds, strict=True):
                os.makedirs(path, mode=0o755, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC, "")
        finally:
            for fd in fds:
                os.close(fd)


def isolate(uid: int, hide: list[str]) -> list[str]:
    """Isolate this process as the module doc says; return what was done, in words."""
    done: list[str] = []
    libc = _libc()
    try:
        _check(libc.unshare(_CLONE_NEWNS), "unshare")
        _mount(None, "/", None, _MS_REC | _MS_PRIVATE, "")
    except OSError as exc:
        done.append(f"no mount namespace ({exc.strerror}): the MNIST files stay readable")
    else:
        keep = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path]
        keep.append(os.path.dirname(os.path.realpath(sys.executable)))
        _keep_reachable(_outermost(keep))
        hidden = 0
        empty = _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        for directory in _outermost(hide):
            _mount("tmpfs", directory, "tmpfs", empty, "")
            hidden += 1
        done.append(f"the MNIST files hidden ({hidden} director{'y' if hidden == 1 else 'ies'})")
    os.chdir("/")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    done.insert(0, f"user id {uid}")
    return done
