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
from pathlib import Path

import numpy as np

from handgrad._atomic import atomic_write
from handgrad.data._open import Opened, open_data
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
_CHUNK = 1 << 20
# NumPy 2 allows 64 dimensions, NumPy 1 allowed 32; IDX headers can declare 255.
_MAX_NDIM = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32
_MAX_BYTES = np.iinfo(np.intp).max
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


def _count_rest(stream: io.BufferedIOBase, cap: float = math.inf) -> int:
    """Bytes left in ``stream``, read in chunks and dropped; stops once past ``cap``."""
    count = len(stream.read(1))  # read(_CHUNK) would allocate a whole chunk to find nothing
    while count and count <= cap and (chunk := stream.read(_CHUNK)):
        count += len(chunk)
    return count


def _read_growing(stream: io.BufferedIOBase, expected: int, first: int) -> tuple[np.ndarray, int]:
    """Up to ``expected`` bytes of ``stream`` in a ``uint8`` array; and how many arrived.

    The array starts at ``first`` bytes and doubles only as the data keeps coming,
    so a header that claims more than the stream holds costs at most about twice
    what really arrived, never what it claims. Growing is a ``realloc``, which
    for large blocks remaps pages instead of copying them.
    """
    buf = np.empty(min(expected, max(first, 1)), dtype=np.uint8)
    filled = 0
    while True:
        with buf.data as view:
            filled += _read_full(stream, view[filled:])
        if filled < len(buf) or len(buf) == expected:
            return buf, filled
        buf.resize(min(2 * len(buf), expected), refcheck=False)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-byte-order array.

    Every part of the file is checked: the magic number, the type code, the
    number and sizes of the dimensions, and that the payload holds exactly
    ``prod(dims)`` elements. Memory follows what the file really holds, never
    what its header claims: a raw file's size is compared with the header before
    anything is allocated, and a gzip stream (or a pipe) is read into an array
    that grows only as the data arrives, up to the declared size, and no byte
    past it is kept. Memory peaks at about the array's size, not twice it.

    Parameters
    ----------
    path : str or path-like
        The file (a FIFO or pipe works too). Compression is detected from the
        content, not the name.

    Returns
    -------
    numpy.ndarray
        A fresh, writable, C-contiguous array of the file's shape and element type
        (``uint8`` for MNIST images and labels).

    Raises
    ------
    DataError
        Naming the file and the problem: a file that cannot be read, corrupt gzip
        stream, bad magic number, unknown type code, more dimensions than NumPy
        allows, sizes no array can have, truncated payload or trailing bytes.
        (Only a file that really holds more data than fits in memory can raise
        ``MemoryError``.)
    """
    path = Path(path)
    with open_data(path) as opened:
        return _read_idx_stream(path, opened)


def _read_idx_stream(path: Path, opened: Opened) -> np.ndarray:
    stream = opened.stream
    not_gzip_note = ""
    if path.name.endswith(".gz") and not opened.gzipped:
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
    if ndim > _MAX_NDIM:
        raise DataError(
            f"{path}: header declares {ndim} dimensions; NumPy arrays have at most {_MAX_NDIM} "
            f"(magic number 0x{magic.hex()})"
        )
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
    # NumPy refuses a shape whose nonzero sizes multiply past its index range,
    # even with a zero among them (no elements): say so in the file's terms.
    if math.prod(d or 1 for d in dims) * dtype.itemsize > _MAX_BYTES:
        raise DataError(
            f"{path}: impossible header: shape {dims} of {native.name} is beyond the largest "
            f"array NumPy can index ({_MAX_BYTES} bytes)"
            + (", even though its zero size makes it empty" if expected == 0 else "")
        )

    def size_error(got: int, at_least: bool = False) -> DataError:
        problem = (
            "truncated"
            if got < expected
            else f"{'at least ' if at_least else ''}{got - expected} trailing bytes"
        )
        has = f"{'at least ' if at_least else ''}{got}"
        return DataError(
            f"{path}: {problem}: header says {_shape_str(dims)} = {expected} bytes of "
            f"{native.name}, file has {has} bytes after the {header_len}-byte header"
        )

    if opened.disk_size is not None and not opened.gzipped:
        # A raw file's payload is exactly its size less the header: check before reading.
        if opened.disk_size - header_len != expected:
            raise size_error(opened.disk_size - header_len)
        first = expected
    elif opened.disk_size is not None:
        # Deflate expands at most about 1032:1: a header asking for more than that
        # is truncated for sure, whatever the stream holds.
        if expected > opened.disk_size * _MAX_DEFLATE_RATIO:
            raise size_error(_count_rest(stream))
        first = max(opened.disk_size, _CHUNK)
    else:
        first = _CHUNK  # a pipe: nothing known until the data arrives
    buf, got = _read_growing(stream, expected, first)
    if got < expected:
        raise size_error(got)
    # Reading on to the end also makes gzip check its CRC and length trailer; but
    # a stream far longer than declared (a pipe, a deflate bomb) is not read to its end.
    extra = _count_rest(stream, cap=_CHUNK)
    if extra:
        raise size_error(expected + extra, at_least=extra > _CHUNK)
    out = buf.view(native).reshape(dims)
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
