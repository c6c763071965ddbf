"""Checked, atomic downloads with mirror fallback (standard library ``urllib`` only).

A file is streamed into a temporary file in the destination directory, its
*decompressed* payload is hashed, and only a file with the expected SHA-256 is
renamed into place. Hashing the payload rather than the ``.gz`` bytes means a
mirror that re-compressed the same data still verifies.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from handgrad._atomic import atomic_open
from handgrad.data._open import open_data
from handgrad.data.errors import DataError

_CHUNK = 1 << 20


class _Rejected(Exception):
    """This mirror's copy is no good: abandon the temporary file, try the next one."""


def payload_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the file's contents, decompressed first if it is a gzip stream.

    Streams in 1 MiB chunks, so memory stays flat whatever the file size. A file
    that cannot be read or a corrupt gzip stream is a :class:`DataError` naming it.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with open_data(path) as opened:
        while chunk := opened.stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(exc: BaseException) -> str:
    """One line for a failed request: 'HTTP Error 404: Not Found', 'Connection refused'."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP Error {exc.code}: {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror
        return str(reason)
    return f"{type(exc).__name__}: {exc}"


def _fetch(url: str, out: BinaryIO, timeout: float) -> str:
    """Stream ``url`` into ``out``; the payload SHA-256 of what arrived.

    Raises
    ------
    _Rejected
        For a failed request or a corrupt gzip stream; chained to the cause.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, _CHUNK)
        out.flush()
        return payload_sha256(out.name)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # URLError/HTTPError, refused/reset connections, timeouts, bad URLs,
        # and DataError (a ValueError) for a corrupt gzip stream.
        raise _Rejected(_describe(exc)) from exc


def download_verified(
    urls: Sequence[str],
    target: str | os.PathLike[str],
    sha256: str,
    *,
    timeout: float = 30.0,
    hint: str = "",
) -> Path:
    """Fetch the first of ``urls`` whose payload has SHA-256 ``sha256`` into ``target``.

    Each URL is tried in order; a network error, HTTP error, corrupt gzip stream
    or checksum mismatch moves on to the next. The download goes to a temporary
    file beside ``target`` (see :func:`handgrad._atomic.atomic_open`), removed on
    every failure, so nothing half-downloaded is ever left behind; the final file
    gets the mode a plain ``open()`` would give.

    Parameters
    ----------
    urls : sequence of str
        Candidate locations of the same file, best first.
    target : str or path-like
        Final path; its directory must exist.
    sha256 : str
        Expected hex SHA-256 of the decompressed payload.
    timeout : float
        Seconds to wait for each connection and read.
    hint : str
        Appended to the error message (e.g. where to put the file by hand).

    Raises
    ------
    DataError
        If no URL gave a good copy; lists every URL with its failure, including
        expected and actual hash for a mismatch. Chained to the last exception.
    """
    target = Path(target)
    failures: list[str] = []
    last_exc: BaseException | None = None
    for url in urls:
        try:
            with atomic_open(target) as out:
                actual = _fetch(url, out, timeout)
                if actual != sha256:
                    raise _Rejected(f"checksum mismatch: expected sha256 {sha256}, got {actual}")
        except _Rejected as exc:  # atomic_open removed the temporary file
            failures.append(f"{url}: {exc}")
            last_exc = exc.__cause__ or last_exc
            continue
        return target
    tried = "\n".join(f"  - {line}" for line in failures) or "  (no URLs given)"
    message = f"{target.name}: could not download a good copy from any mirror:\n{tried}"
    if hint:
        message += "\n" + hint
    raise DataError(message) from last_exc
