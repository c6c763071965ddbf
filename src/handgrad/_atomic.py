"""Atomic file writes: a temporary file beside the target, renamed over it when complete.

The one helper behind :func:`handgrad.save`, :func:`handgrad.data.write_idx`, the
Kaggle CSV writer and the verified downloader, so readers never see half a file
and an interrupted write (``KeyboardInterrupt`` included) leaves no debris.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def _create_temp(target: Path) -> tuple[BinaryIO, Path]:
    # open(..., "xb") is O_CREAT | O_EXCL with mode 0o666, so the kernel applies the
    # umask (and any default ACL) exactly as for a plain open(): no umask() call,
    # which would briefly change the umask of every thread. O_EXCL also refuses to
    # follow a symlink planted at the name.
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return open(tmp, "xb"), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {target}")


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a new binary file that replaces ``path`` when the block ends without error.

    The file is a temporary one in ``path``'s directory (its ``name`` is that
    temporary path); on a clean exit it is flushed, fsynced and renamed over
    ``path`` with :func:`os.replace`. Its mode is what a plain ``open()`` would
    give, ``0o666 & ~umask``. If the block raises (``KeyboardInterrupt``
    included), the temporary file is removed, ``path`` is left as it was, and the
    exception propagates: raise inside the block to abandon the write.
    """
    target = Path(path)
    fh, tmp = _create_temp(target)
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    See :func:`atomic_open`. Returns ``Path(path)``.
    """
    with atomic_open(path) as fh:
        write(fh)
    return Path(path)
