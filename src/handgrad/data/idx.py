"""The IDX file format of MNIST: read and write, gzip-compressed or raw.

An IDX file is a 4-byte magic number ``00 00 TT ND`` (``TT`` the element type,
``ND`` the number of dimensions), then ``ND`` big-endian ``uint32`` sizes, then
the elements in C order, big-endian. Nothing may follow the last element.
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from handgrad.data.errors import DataError

# IDX type code -> big-endian element dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF: dict[str, int] = {dt.newbyteorder("=").name: code for code, dt in IDX_TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_KNOWN = ", ".join(f"0x{code:02x} ({dt.newbyteorder('=').name})" for code, dt in IDX_TYPES.items())


def _shape_str(dims: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in dims)


def _read_maybe_gzip(path: Path) -> tuple[bytes, bool]:
    """Contents of ``path`` and whether they were gzip-compressed (sniffed, not by name)."""
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw, False
    try:
        return gzip.decompress(raw), True
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip stream ({exc})") from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-byte-order array.

    Every part of the file is checked: the magic number, the type code, and that
    the payload holds exactly ``prod(dims)`` elements.

    Parameters
    ----------
    path : str or path-like
        The file. Compression is detected from the content, not the name.

    Returns
    -------
    numpy.ndarray
        A fresh, writable array of the file's shape and element type
        (``uint8`` for MNIST images and labels).

    Raises
    ------
    DataError
        Naming the file and the problem: corrupt gzip stream, bad magic number,
        unknown type code, truncated payload or trailing bytes.
    """
    path = Path(path)
    data, was_gzip = _read_maybe_gzip(path)
    not_gzip_note = ""
    if path.name.endswith(".gz") and not was_gzip:
        not_gzip_note = " (the name ends in .gz but the file is not gzip-compressed)"
    if len(data) < 4:
        raise DataError(
            f"{path}: truncated: {len(data)} bytes, too short for the 4-byte IDX magic number"
            f"{not_gzip_note}"
        )
    zero0, zero1, code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0 or ndim == 0:
        raise DataError(
            f"{path}: bad magic number 0x{data[:4].hex()}: an IDX file starts with two zero "
            f"bytes, a type code and the number of dimensions (1 or more), e.g. 0x00000803 "
            f"for uint8 images{not_gzip_note}"
        )
    if code not in IDX_TYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}; expected one of {_KNOWN}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{path}: truncated header: {ndim} dimensions need {header_len} bytes, "
            f"file has {len(data)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    count = math.prod(dims)
    expected = count * dtype.itemsize
    got = len(data) - header_len
    if got != expected:
        problem = "truncated" if got < expected else f"{got - expected} trailing bytes"
        raise DataError(
            f"{path}: {problem}: header says {_shape_str(dims)} = {expected} bytes of "
            f"{dtype.newbyteorder('=').name}, file has {got} bytes after the "
            f"{header_len}-byte header"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header_len).reshape(dims)
    # astype copies: the result is writable, native-endian and does not pin `data`.
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when the name ends in ``.gz``.

    The file is written to a temporary name in the same directory and renamed
    into place, so readers never see half a file.

    Parameters
    ----------
    path : str or path-like
        Destination.
    array : numpy.ndarray
        At least one dimension; dtype uint8, int8, int16, int32, float32 or float64.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    arr = np.asarray(array)
    name = arr.dtype.newbyteorder("=").name
    if name not in _CODE_OF:
        raise TypeError(
            f"IDX has no element type for {arr.dtype}; supported: {_KNOWN}. "
            "Cast first, e.g. array.astype(np.int32)"
        )
    if not 1 <= arr.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got array of shape {arr.shape}")
    if any(d >= 2**32 for d in arr.shape):
        raise ValueError(f"IDX dimensions must be below 2**32, got shape {arr.shape}")
    code = _CODE_OF[name]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = header + arr.astype(IDX_TYPES[code], copy=False).tobytes(order="C")
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)  # mtime=0: same array, same bytes
    write_atomic(path, payload)
    return path


def write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file next to ``path``, then rename it over ``path``."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; data files are for everyone to read
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
