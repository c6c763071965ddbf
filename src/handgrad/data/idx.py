"""The IDX file format of MNIST: read and write, gzip-compressed or raw.

An IDX file is a 4-byte magic number ``00 00 TT ND`` (``TT`` the element type,
``ND`` the number of dimensions), then ``ND`` big-endian ``uint32`` sizes, then
the elements in C order, big-endian. Nothing may follow the last element.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import stat
import zlib
from pathlib import Path

import numpy as np

from handgrad._atomic import atomic_write
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
_CHUNK = 1 << 20
# Deflate cannot expand data more than about 1032:1 (a run of one byte).
_MAX_DEFLATE_RATIO = 1032
_KNOWN = ", ".join(f"0x{code:02x} ({dt.newbyteorder('=').name})" for code, dt in IDX_TYPES.items())


def _shape_str(dims: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in dims)


def _read_full(stream: io.BufferedIOBase, out: memoryview) -> int:
    """Fill ``out`` from ``stream`` in chunks; the number of bytes read (less at end of file).

    In chunks because a gzip stream's ``readinto`` goes through a temporary
    ``bytes`` of the requested size: this way it costs one chunk, not a payload.
    """
    filled = 0
    while filled < len(out):
        n = stream.readinto(out[filled : filled + _CHUNK])
        if not n:
            break
        filled += n
    return filled


def _count_rest(stream: io.BufferedIOBase) -> int:
    """Bytes left in ``stream``, read in chunks and dropped."""
    count = len(stream.read(1))  # read(_CHUNK) would allocate a whole chunk to find nothing
    while count and (chunk := stream.read(_CHUNK)):
        count += len(chunk)
    return count


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-byte-order array.

    Every part of the file is checked: the magic number, the type code, and that
    the payload holds exactly ``prod(dims)`` elements. The payload is read
    straight into the returned array (decompressed chunk by chunk for gzip), so
    memory peaks at about the array's size, not twice it.

    Parameters
    ----------
    path : str or path-like
        The file. Compression is detected from the content, not the name.

    Returns
    -------
    numpy.ndarray
        A fresh, writable, C-contiguous array of the file's shape and element type
        (``uint8`` for MNIST images and labels).

    Raises
    ------
    DataError
        Naming the file and the problem: corrupt gzip stream, bad magic number,
        unknown type code, truncated payload or trailing bytes.
    """
    path = Path(path)
    with open(path, "rb") as raw:  # readinto of a whole chunk bypasses its small buffer
        was_gzip = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        st = os.fstat(raw.fileno())
        # Most bytes the payload can have: the file size, or for gzip the most
        # deflate can expand it. A header asking for more is truncated for sure,
        # and is reported without allocating what it asks for.
        limit: float = st.st_size * (_MAX_DEFLATE_RATIO if was_gzip else 1)
        if not stat.S_ISREG(st.st_mode):
            limit = math.inf
        if not was_gzip:
            return _read_idx_stream(path, raw, was_gzip, limit)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_idx_stream(path, stream, was_gzip, limit)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip stream ({exc})") from exc


def _read_idx_stream(
    path: Path, stream: io.BufferedIOBase, was_gzip: bool, limit: float
) -> np.ndarray:
    not_gzip_note = ""
    if path.name.endswith(".gz") and not was_gzip:
        not_gzip_note = " (the name ends in .gz but the file is not gzip-compressed)"
    magic = stream.read(4)
    if len(magic) < 4:
        raise DataError(
            f"{path}: truncated: {len(magic)} bytes, too short for the 4-byte IDX magic number"
            f"{not_gzip_note}"
        )
    zero0, zero1, code, ndim = magic
    if zero0 != 0 or zero1 != 0 or ndim == 0:
        raise DataError(
            f"{path}: bad magic number 0x{magic.hex()}: an IDX file starts with two zero "
            f"bytes, a type code and the number of dimensions (1 or more), e.g. 0x00000803 "
            f"for uint8 images{not_gzip_note}"
        )
    if code not in IDX_TYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}; expected one of {_KNOWN}")
    header_len = 4 + 4 * ndim
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(
            f"{path}: truncated header: {ndim} dimensions need {header_len} bytes, "
            f"file has {4 + len(sizes)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(sizes, dtype=">u4"))
    dtype = IDX_TYPES[code]
    native = dtype.newbyteorder("=")
    expected = math.prod(dims) * dtype.itemsize

    def size_error(got: int) -> DataError:
        problem = "truncated" if got < expected else f"{got - expected} trailing bytes"
        return DataError(
            f"{path}: {problem}: header says {_shape_str(dims)} = {expected} bytes of "
            f"{native.name}, file has {got} bytes after the {header_len}-byte header"
        )

    if expected > limit:
        raise size_error(_count_rest(stream))
    out = np.empty(dims, dtype=native)
    got = _read_full(stream, out.reshape(-1).view(np.uint8).data)
    if got < expected:
        raise size_error(got)
    # Reading on to the end also makes gzip check its CRC and length trailer.
    extra = _count_rest(stream)
    if extra:
        raise size_error(expected + extra)
    if not dtype.isnative:
        out.byteswap(inplace=True)  # the bytes are big-endian; `out` is typed native
    return out


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


def write_atomic(path: str | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to a temporary file next to ``path``, then rename it over ``path``.

    See :func:`handgrad._atomic.atomic_open`: the file gets the mode a plain
    ``open()`` would give, and a failed write leaves ``path`` untouched.
    """
    atomic_write(path, lambda f: f.write(payload))
