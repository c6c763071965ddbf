"""Real isolation for a lab child, where the machine allows it: Linux, the grader run as root.

Called by the child (:mod:`handgrad.lab._runner`) after it has read everything
it needs (the submission's source, the images) and before it runs a line of the
submission:

1. a mount namespace of its own (``unshare(CLONE_NEWNS)``, mounts private), in
   which, in this order:

   - the Python installation stays reachable for the new user id (a directory it
     could not enter, such as a 0700 ``/root`` holding a pyenv, is covered by a
     tmpfs into which only the installation is bind-mounted);
   - every git work tree that holds the handgrad package, a directory MNIST is
     looked for in, or the directory the grader was started in (a clone of
     handgrad: its ``.git`` holds the test files in every commit) is covered by
     a tmpfs into which only what the interpreter still reads is bind-mounted
     back (a ``.venv`` with NumPy; never the work tree itself, nor its ``.git``);
   - every directory the MNIST files are looked for in is covered by an empty
     read-only tmpfs, so the test labels cannot be read;

2. a user and group id of its own, picked by the parent at random from a range
   no account uses, with no supplementary groups and ``PR_SET_NO_NEW_PRIVS``:
   it can no longer signal the grader, raise its memory limit, read files that
   are not world-readable, or gain privileges through a set-user-ID program.

A third process, the reaper (:func:`start_reaper`), forked before the switch,
stays root and waits; when the child dies, however it dies (the grader
SIGKILLed, and the child with it by its parent-death signal), it kills every
process of the child's user id, so nothing the submission started outlives it.
Not isolated, the reaper runs as the child does and kills the child's session,
process group and their descendants instead; the child adopts the orphans of
its descendants (:func:`adopt_orphans`), so while it lives, a process whose
parent exited is still its descendant.

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
_PR_SET_CHILD_SUBREAPER = 36
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


def _kill_session(leader: int) -> None:
    """SIGKILL every process of the session and process group ``leader`` led, and their
    descendants (:func:`handgrad.lab._procs.child_processes`), this one aside."""
    from handgrad.lab._procs import child_processes

    me = os.getpid()
    for _ in range(50):
        left = [pid for pid in child_processes(leader, None) if pid not in (me, leader)]
        if not left:
            return
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def adopt_orphans() -> None:
    """Make this process the parent of its descendants' orphans (``PR_SET_CHILD_SUBREAPER``,
    Linux): a process whose parent exits, even in a session of its own, stays a descendant,
    so the parent's count of memory and its kill at the end find it."""
    if sys.platform.startswith("linux"):
        _libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def start_reaper(uid: int | None) -> None:
    """Fork the reaper (module doc): asleep until its parent, the child, dies; then it kills
    every process of ``uid`` (isolated: the reaper stays root) or, for ``None``, the child's
    session, process group and their descendants. Linux only."""
    from handgrad.lab._procs import HAVE_PROC

    if not HAVE_PROC:
        return
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
        if uid is None:
            _kill_session(parent)  # the child led its session (the grader started it so)
        else:
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


def _outermost(paths: Iterable[str], real: bool = True) -> list[str]:
    """The existing directories among ``paths``, none inside another.

    ``real``: as real paths (symbolic links resolved); else as absolute paths, the
    way a process that names them will look them up.
    """
    fix = os.path.realpath if real else os.path.abspath
    found = sorted({fix(p) for p in paths if p and os.path.isdir(p)})
    kept: list[str] = []
    for path in found:
        if not any(_within(path, k) for k in kept):
            kept.append(path)
    return kept


def _within(path: str, top: str) -> bool:
    """Is ``path`` ``top`` or inside it? (Both absolute and normalised.)"""
    return path == top or path.startswith(top.rstrip("/") + "/")


def _closed_ancestor(path: str) -> str | None:
    """The topmost directory on the way to ``path`` that others may not enter, if any."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:i])
        if not os.stat(ancestor).st_mode & stat.S_IXOTH:
            return ancestor
    return None


def _cover(top: str, keep: list[str]) -> None:
    """Cover ``top`` with a tmpfs into which only ``keep`` (paths inside it) is bind-mounted."""
    fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in keep]  # before they are covered
    try:
        _mount("tmpfs", top, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
        for path, fd in zip(keep, fds, strict=True):
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC, "")
    finally:
        for fd in fds:
            os.close(fd)


def _keep_reachable(keep: list[str]) -> None:
    """Cover each closed directory above ``keep`` with a tmpfs holding only the kept paths."""
    closed: dict[str, list[str]] = {}
    for path in keep:
        top = _closed_ancestor(path)
        if top is not None:
            closed.setdefault(top, []).append(path)
    for top, paths in closed.items():
        _cover(top, paths)


def _repository_of(gitdir: str) -> str:
    """What holds the repository whose git directory is ``gitdir``: the work tree above
    a ``.git`` on its path (``main/.git/worktrees/x``, ``super/.git/modules/x``), or
    ``gitdir`` itself (a bare repository)."""
    parts = gitdir.split("/")
    if ".git" in parts[1:]:
        return "/".join(parts[: parts.index(".git", 1)]) or "/"
    return gitdir


def _linked_repositories(dot_git: str) -> list[str]:
    """For a ``.git`` file (a worktree or a submodule): where its objects really live."""
    try:
        with open(dot_git, encoding="utf-8", errors="replace") as f:
            text = f.read(4096)
    except OSError:
        return []
    if not text.startswith("gitdir:"):
        return []
    base = os.path.dirname(dot_git)
    gitdir = os.path.normpath(os.path.join(base, text[len("gitdir:") :].strip()))
    found = [_repository_of(gitdir)]
    try:  # a worktree's objects are in the main repository's git directory
        with open(os.path.join(gitdir, "commondir"), encoding="utf-8") as f:
            common = os.path.normpath(os.path.join(gitdir, f.read(4096).strip()))
        found.append(_repository_of(common))
    except OSError:
        pass
    return found


def checkouts(starts: Iterable[str]) -> list[str]:
    """The git work trees at or above ``starts``, and the repositories their ``.git`` files
    point to, outermost only: each holds every committed version of what it tracks.

    ``/`` is never given: where it holds a ``.git``, that ``.git`` is.
    """
    found: set[str] = set()
    for start in starts:
        here = os.path.realpath(start)
        while True:
            dot_git = os.path.join(here, ".git")
            if os.path.lexists(dot_git):
                found.add(here)
                if os.path.isfile(dot_git):
                    found.update(_linked_repositories(dot_git))
            if here == "/":
                break
            here = os.path.dirname(here)
    return _outermost(p if p != "/" else "/.git" for p in found)


def _needed(trees: list[str]) -> list[str]:
    """What the child still reads once isolated: the interpreter, the directories the
    standard library and NumPy load from (NumPy imports its submodules lazily), and the
    entries of ``sys.path`` outside ``trees`` (within them, only handgrad's own source,
    which the child may not import, or the work tree itself, under ``python -m``)."""
    from handgrad.lab._sandbox import STDLIB_DIRS, THIRD_PARTY_DIRS

    keep = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    keep += [os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))]
    keep += [*STDLIB_DIRS, *THIRD_PARTY_DIRS]
    numpy = sys.modules.get("numpy")
    for place in getattr(numpy, "__path__", []):
        keep.append(os.path.dirname(place))
    for entry in sys.path:
        if entry and not any(_within(os.path.abspath(entry), t) for t in trees):
            if not any(_within(os.path.realpath(entry), t) for t in trees):
                keep.append(entry)
    return keep


def _cover_trees(trees: list[str], keep: list[str]) -> list[str]:
    """Cover each of ``trees`` with a tmpfs holding only the paths of ``keep`` inside it (as
    written and as real paths), never a tree itself nor its ``.git``; say what was done."""
    said = []
    for tree in trees:
        if not os.path.isdir(tree):  # already out of sight, under a closed directory
            continue
        inside = [
            p
            for p in _outermost(keep, real=False) + _outermost(keep)
            if _within(p, tree) and p != tree and not _within(p, os.path.join(tree, ".git"))
        ]
        inside = _outermost(inside, real=False)
        _cover(tree, inside)
        kept = ", ".join(os.path.relpath(p, tree) for p in inside)
        said.append(f"the git work tree {tree} hidden" + (f" but for {kept}" if kept else ""))
    return said


#: The handgrad package: the checkout it lies in (if any) is covered.
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cwd() -> str:
    """The directory the grader was started in (a clone of handgrad, in CI), or ``/``."""
    try:
        return os.getcwd()
    except OSError:  # removed since
        return "/"


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
        hidden = _outermost(hide)  # before anything is covered
        trees = checkouts([_PACKAGE, _cwd(), *hidden])
        keep = _needed(trees)
        _keep_reachable(_outermost(keep))
        covered = _cover_trees(trees, keep)
        empty = _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        for directory in hidden:
            if os.path.isdir(directory):  # else out of sight already, under a cover
                _mount("tmpfs", directory, "tmpfs", empty, "")
        n = len(hidden)
        done.append(f"the MNIST files hidden ({n} director{'y' if n == 1 else 'ies'})")
        done += covered
    os.chdir("/")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    done.insert(0, f"user id {uid}")
    return done
