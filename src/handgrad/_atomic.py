"""Atomic file writes: a temporary file beside the target, renamed over it when complete.

The one helper behind :func:`handgrad.save`, :func:`handgrad.data.write_idx`, the
Kaggle CSV writer and the verified downloader, so readers never see half a file
and an interrupted write (``KeyboardInterrupt`` included) leaves no debris.

A writer killed outright (SIGKILL, a power cut) cannot remove its temporary file,
so each one says whose it is: its name holds the writer's pid and the process's
start time (from ``/proc``, so a recycled pid does not pass for the writer), and
the writer holds an advisory lock (``flock``) on it while writing. The next write
of the same target removes the temporary files of that target whose writer is
gone: the lock is free *and* no process with that pid and start time exists. A
live writer's file is never removed, whichever of the two it has yet to show.
After the rename the directory is fsynced (where the filesystem allows), so the
new name survives a crash too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so no clean-up of others' files
    fcntl = None  # type: ignore[assignment]

# ".<target name>.<pid>-<start time or x>-<8 hex digits>.tmp"
_TEMP_TAIL = re.compile(r"(\d+)-(\d+|x)-[0-9a-f]{8}\.tmp")


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from /proc), or None
    where /proc cannot say (no such process, or no /proc: macOS, Windows)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat_line = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')'.
    fields = stat_line.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None  # field 22: starttime


def _own_start_time() -> str:
    """This process's start time ("x" where /proc cannot say); after a fork, the child's."""
    pid = os.getpid()
    if _OWN[0] != pid:
        _OWN[:] = [pid, _start_time(pid) or "x"]
    return str(_OWN[1])


_OWN: list[int | str] = [-1, "x"]


def _writer_alive(pid: int, start: str) -> bool:
    """Whether the process that wrote a temporary file may still be running."""
    if pid <= 0:
        return False
    if start != "x" and Path("/proc/self/stat").exists():
        return _start_time(pid) == start  # a recycled pid has another start time
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user
        return True
    return True


def _lock(fd: int, blocking: bool) -> bool:
    """Take the advisory lock on ``fd``; False if another process holds it (or, for a
    blocking lock, if the filesystem has no locks)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:  # EWOULDBLOCK: held; ENOLCK, EOPNOTSUPP...: cannot tell
        return False
    return True


def _remove_stale_temps(target: Path) -> list[Path]:
    """Remove the temporary files of ``target`` left by writers that are gone; return them.

    A file is stale when its name parses, it is a regular file, its writer (pid and start
    time) no longer runs, and its lock can be taken. Never raises: clean-up is a courtesy.
    """
    if fcntl is None:
        return []
    prefix = f".{target.name}."
    removed = []
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix)]
    except OSError:
        return []
    for name in names:
        match = _TEMP_TAIL.fullmatch(name[len(prefix) :])
        if match is None or _writer_alive(int(match[1]), match[2]):
            continue
        path = target.parent / name
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _lock(fd, blocking=False):
                # Still the same file (not replaced since we opened it)?
                if os.path.samestat(os.fstat(fd), os.lstat(path)):
                    os.unlink(path)
                    removed.append(path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _create_temp(target: Path) -> tuple[BinaryIO, Path]:
    # open(..., "xb") is O_CREAT | O_EXCL with mode 0o666, so the kernel applies the
    # umask (and any default ACL) exactly as for a plain open(): no umask() call,
    # which would briefly change the umask of every thread. O_EXCL also refuses to
    # follow a symlink planted at the name.
    owner = f"{os.getpid()}-{_own_start_time()}"
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{owner}-{secrets.token_hex(4)}.tmp")
        try:
            fh = open(tmp, "xb")
        except FileExistsError:
            continue
        _lock(fh.fileno(), blocking=True)  # held until the file is renamed and closed
        return fh, tmp
    raise FileExistsError(f"could not create a temporary file beside {target}")


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable, where the OS and filesystem allow it."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # EINVAL, ENOTSUP...: a filesystem that cannot sync directories
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EROFS, errno.EACCES):
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a new binary file that replaces ``path`` when the block ends without error.

    The file is a temporary one in ``path``'s directory (its ``name`` is that
    temporary path); on a clean exit it is flushed, fsynced and renamed over
    ``path`` with :func:`os.replace`, and the directory is fsynced. Its mode is
    what a plain ``open()`` would give, ``0o666 & ~umask``. If the block raises
    (``KeyboardInterrupt`` included), the temporary file is removed, ``path`` is
    left as it was, and the exception propagates: raise inside the block to
    abandon the write. Before writing, temporary files of ``path`` whose writer
    was killed are removed (see the module's docstring).
    """
    target = Path(path)
    _remove_stale_temps(target)
    fh, tmp = _create_temp(target)
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            if os.name == "nt":  # Windows cannot rename an open file
                fh.close()
            # Renamed while still open, so still locked: never unlocked under its temp name.
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    See :func:`atomic_open`. Returns ``Path(path)``.
    """
    with atomic_open(path) as fh:
        write(fh)
    return Path(path)
