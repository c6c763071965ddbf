"""Reading an untrusted ``.npz`` in memory bounded by the file: every size is checked
before it is allocated, every array's ``.npy`` header before its data is read.

:class:`CheckedNpz` is what :mod:`handgrad.serialization` reads model files with.
Opening checks the zip's directory and each member's entry: a ``.npy`` name, printable
and not too long, once; no encryption; stored or deflate compression; a stored member
as long unpacked as packed and inside the file; and unpacked sizes that add up to no
more than the file plus :data:`DEFLATE_ALLOWANCE`. :meth:`CheckedNpz.check_arrays`
then reads each member's ``.npy`` header alone: an allowed dtype kind (never objects,
so never pickle; never records or sub-arrays), at most :data:`MAX_NDIM` dimensions,
and a data size equal to what the zip declares, so reading an array allocates exactly
its bytes, once. Every problem is an :class:`ArchiveError`.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A .npz is a zip archive: a local file header, or the end record of an empty one.
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
MAX_NDIM = 32
MAX_MEMBERS = 100_000
MAX_NAME_CHARS = 1024
# handgrad writes members uncompressed, so their sizes add up to less than the file.
# Compressed (deflate) members may expand beyond the file by at most this much in all.
DEFLATE_ALLOWANCE = 256 << 20
_READ_CHUNK = 1 << 20
_FLOAT64 = np.dtype(np.float64)
_KIND_NAMES = {"b": "bool", "i": "int", "u": "unsigned int", "f": "float", "c": "complex"}
_KIND_NAMES["U"] = "unicode text"


class ArchiveError(ValueError):
    """What is wrong with an archive, worded for the user (the caller names the file)."""


class NotAnArchive(ArchiveError):
    """The file is not a zip archive at all."""


def _detail(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _damaged(exc: BaseException | str) -> ArchiveError:
    detail = exc if isinstance(exc, str) else _detail(exc)
    return ArchiveError(f"not a valid .npz archive: damaged or truncated ({detail})")


@dataclass
class Member:
    """One array of the archive, as its zip entry and ``.npy`` header declare it."""

    info: zipfile.ZipInfo
    key: str  # the name without ".npy"
    shape: tuple[int, ...] = ()
    dtype: np.dtype = _FLOAT64
    fortran: bool = False
    offset: int = 0  # bytes of .npy header before the data
    nbytes: int = 0

    @property
    def size(self) -> int:
        return self.nbytes // self.dtype.itemsize if self.dtype.itemsize else 0


class CheckedNpz:
    """An open ``.npz`` whose zip entries were checked; no array data read yet.

    Attributes
    ----------
    members : dict
        ``{key: Member}`` of the well-formed ``.npy`` members.
    malformed : list of str
        Names that are not a printable ``NAME.npy`` of at most :data:`MAX_NAME_CHARS`.
    """

    def __init__(self, file: Path) -> None:
        self.file = file
        with open(file, "rb") as fh:
            head = fh.read(4)
            file_size = os.fstat(fh.fileno()).st_size
        if head not in ZIP_MAGICS:
            what = "an empty file" if not head else f"the file starts with 0x{head.hex()}"
            raise NotAnArchive(f"not a .npz (zip) archive ({what})")
        try:
            self.zip = zipfile.ZipFile(file)
        except Exception as exc:  # a forged directory: BadZipFile, ValueError, OverflowError...
            raise _damaged(exc) from exc
        try:
            self._check_entries(file_size)
        except BaseException:
            self.zip.close()
            raise

    def __enter__(self) -> CheckedNpz:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.zip.close()

    def _check_entries(self, file_size: int) -> None:
        infos = self.zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ArchiveError(f"{len(infos):,} members, more than a handgrad file holds")
        self.members: dict[str, Member] = {}
        self.malformed: list[str] = []
        names: set[str] = set()
        declared = 0
        for info in infos:
            name = info.filename
            if name in names:
                raise ArchiveError(f"member {name!r:.100} appears twice in the archive")
            names.add(name)
            if not (name.endswith(".npy") and len(name) <= MAX_NAME_CHARS and name.isprintable()):
                self.malformed.append(name)
                continue
            if info.flag_bits & 0x41:  # bit 0: encrypted; bit 6: strong encryption
                raise ArchiveError(f"member {name!r} is encrypted; handgrad's files never are")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ArchiveError(
                    f"member {name!r} uses compression method {info.compress_type}, which "
                    "handgrad does not read (its files are uncompressed)"
                )
            if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                raise _damaged(
                    f"member {name!r} is stored uncompressed, yet declares "
                    f"{info.compress_size} bytes stored and {info.file_size} unpacked"
                )
            if info.header_offset + info.compress_size > file_size:
                raise _damaged(f"member {name!r} runs past the end of the file")
            declared += info.file_size
            self.members[name[:-4]] = Member(info, name[:-4])
        if declared > file_size + DEFLATE_ALLOWANCE:
            raise ArchiveError(
                f"its arrays declare {declared:,} bytes unpacked, from a file of {file_size:,} "
                "bytes: refusing to decompress them (handgrad writes its files uncompressed)"
            )

    def check_arrays(self, kinds: dict[str, str]) -> None:
        """Read and check every member's ``.npy`` header; ``kinds[key]`` holds the dtype
        kinds (``numpy.dtype.kind``) that member may have."""
        for key, member in self.members.items():
            self._check_npy_header(member, kinds[key])

    def _check_npy_header(self, member: Member, kinds: str) -> None:
        key, fmt = member.key, np.lib.format
        try:
            with self.zip.open(member.info) as fp:
                version = fmt.read_magic(fp)
                if version == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(fp)
                elif version == (2, 0):
                    shape, fortran, dtype = fmt.read_array_header_2_0(fp)
                else:
                    raise ValueError(f".npy format version {version} is not one numpy writes")
                offset = fp.tell()
        except Exception as exc:  # ValueError from numpy; BadZipFile, EOFError... from zip
            raise ArchiveError(f"array {key!r}: damaged .npy header ({_detail(exc)})") from exc
        if dtype.hasobject:
            raise ArchiveError(
                f"array {key!r} holds pickled Python objects; handgrad never loads pickle "
                "(it can run code)"
            )
        if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
            names = [_KIND_NAMES.get(k, k) for k in kinds]
            allowed = ", ".join(names[:-1]) + (" or " if len(names) > 1 else "") + names[-1]
            raise ArchiveError(
                f"array {key!r} has dtype {str(dtype)[:60]!r}; it may hold {allowed}"
            )
        if len(shape) > MAX_NDIM or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ArchiveError(f"array {key!r} has a malformed shape {str(shape)[:100]}")
        count = 1
        for n in shape:
            count *= n
        nbytes = count * dtype.itemsize
        if offset + nbytes != member.info.file_size:
            raise ArchiveError(
                f"array {key!r} claims shape {str(shape)[:100]} of {dtype} ({nbytes:,} bytes), "
                f"but the archive holds {max(member.info.file_size - offset, 0):,} bytes of "
                "data for it: a damaged or forged file"
            )
        member.shape, member.dtype, member.fortran = shape, dtype, fortran
        member.offset, member.nbytes = offset, nbytes

    def read(self, key: str) -> np.ndarray:
        """The (writable) array ``key``, read in chunks into one buffer of its checked
        size; the zip checks its CRC on the last chunk."""
        member = self.members[key]
        buffer = bytearray(member.nbytes)
        view = memoryview(buffer)
        try:
            with self.zip.open(member.info) as fp:
                fp.read(member.offset)
                done = 0
                while done < member.nbytes:
                    chunk = fp.read(min(_READ_CHUNK, member.nbytes - done))
                    if not chunk:
                        raise EOFError(f"array {key!r} ends early")
                    view[done : done + len(chunk)] = chunk
                    done += len(chunk)
                fp.read(1)  # reach the end: the zip checks the CRC there
        except Exception as exc:
            raise _damaged(exc) from exc
        array = np.frombuffer(buffer, dtype=member.dtype, count=member.size)
        return array.reshape(member.shape, order="F" if member.fortran else "C")
