"""Opening a data file that may be gzip-compressed, with every failure a DataError.

Shared by the IDX and CSV readers. Compression is detected from the first two
bytes, read once: the file is never rewound, so pipes and FIFOs work as well as
regular files. Errors from the operating system and from a damaged gzip stream,
whether opening or later while reading, become :class:`DataError` naming the file.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from handgrad.data.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
# What a damaged gzip stream raises: a bad header or CRC, a cut stream, bad deflate data.
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)
_BUFFER = 1 << 16


class Opened(NamedTuple):
    """An open data file: its (decompressed) bytes and what is known of its size."""

    stream: io.BufferedIOBase
    gzipped: bool
    #: Bytes on disk for a regular file; None when unknown (a pipe, FIFO or device).
    disk_size: int | None


class _Replay(io.RawIOBase):
    """``head`` (bytes already read from ``raw``), then the rest of ``raw``."""

    def __init__(self, head: bytes, raw: io.RawIOBase) -> None:
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int | None:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._raw.readinto(buffer)


def os_error(path: Path, exc: OSError) -> DataError:
    """``path: No such file or directory``: the file and what the system said, one line."""
    return DataError(f"{path}: cannot read: {exc.strerror or exc}")


@contextmanager
def open_data(path: Path) -> Iterator[Opened]:
    """Open ``path`` for reading, decompressing it when its content is gzip.

    Raises
    ------
    DataError
        For a file that cannot be opened or read (missing, a directory, no
        permission, an I/O error) and for a corrupt gzip stream, opening or at
        any point while the caller reads.
    """
    try:
        with open(path, "rb", buffering=0) as raw:
            st = os.fstat(raw.fileno())
            if stat.S_ISDIR(st.st_mode):  # some systems open directories for reading
                raise DataError(f"{path}: is a directory, not a data file")
            head = raw.read(2)
            while len(head) < 2 and (more := raw.read(2 - len(head))):
                head += more  # a pipe may deliver one byte at a time
            gzipped = head == GZIP_MAGIC
            stream: io.BufferedIOBase = io.BufferedReader(_Replay(head, raw), _BUFFER)
            if gzipped:
                stream = gzip.GzipFile(fileobj=stream, mode="rb")
            # st_size 0 is also what /proc and similar files report: unknown, then.
            size = st.st_size if stat.S_ISREG(st.st_mode) and st.st_size else None
            yield Opened(stream, gzipped, size)
    except GZIP_ERRORS as exc:
        raise DataError(f"{path}: corrupt gzip stream ({exc})") from exc
    except OSError as exc:
        raise os_error(path, exc) from exc
