"""Fuzzing the IDX and Kaggle CSV readers: random bytes, mutated valid files, forged headers.

Whatever the bytes, a reader returns an array or raises DataError naming the file, in
one line, and memory follows what the file holds, never what its header claims (each
read runs under tracemalloc, which sees NumPy's allocations). Examples are derandomized,
so CI runs the same ones every time; each test takes a second or two.
"""

from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handgrad.data import DataError, load_kaggle_csv, read_idx
from handgrad.data.idx import IDX_TYPES

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Every input here is under 10 kB; the readers' first buffer is 1 MiB.
PEAK_LIMIT = 8e6


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _check(read: Callable[[Path], object], path: Path, blob: bytes) -> None:
    """``read(path)`` succeeds or raises a one-line DataError naming ``path``; bounded memory."""
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        read(path)
    except DataError as exc:
        message = str(exc)
        assert str(path) in message, message
        assert "\n" not in message, message
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"peak {peak / 1e6:.1f} MB for {len(blob)} bytes"


@st.composite
def mutated(draw: st.DrawFn, sources: list[bytes]) -> bytes:
    """One of ``sources`` with a few bytes flipped, cut, inserted or overwritten by sizes."""
    blob = bytearray(draw(st.sampled_from(sources)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "cut", "forge"]))
        at = draw(st.integers(0, max(len(blob) - 1, 0)))
        if kind == "flip" and blob:
            blob[at] ^= draw(st.integers(1, 255))
        elif kind == "delete":
            del blob[at : at + draw(st.integers(1, 40))]
        elif kind == "insert":
            blob[at:at] = draw(st.binary(min_size=1, max_size=20))
        elif kind == "cut":
            del blob[at:]
        else:  # a size or value a forger would pick
            forged = [
                b"\xff\xff\xff\xff",
                b"\x00\x00\x00\x00",
                b"\x7f\xff\xff\xff",
                b"\x00\x0f\x42\x40",
            ]
            blob[at : at + 4] = draw(st.sampled_from(forged))
    return bytes(blob)


def _maybe_gzip(draw: st.DrawFn, blob: bytes) -> bytes:
    return gzip.compress(blob, mtime=0) if draw(st.booleans()) else blob


# -- IDX --------------------------------------------------------------------------------


def _idx(arr: np.ndarray) -> bytes:
    code = {dt.newbyteorder("="): c for c, dt in IDX_TYPES.items()}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(IDX_TYPES[code]).tobytes()


IDX_FILES = [
    _idx(np.arange(60, dtype=dtype).reshape(shape))
    for dtype in (np.uint8, np.int16, np.int32, np.float64)
    for shape in ((60,), (3, 4, 5))
]
IDX_SOURCES = IDX_FILES + [gzip.compress(blob, mtime=0) for blob in IDX_FILES]


@FUZZ
@given(blob=st.binary(max_size=300), gz=st.booleans())
def test_idx_random_bytes(workdir: Path, blob: bytes, gz: bool) -> None:
    _check(read_idx, workdir / "random-idx3-ubyte.gz", gzip.compress(blob) if gz else blob)


@FUZZ
@given(data=st.data())
def test_idx_mutated_valid_files(workdir: Path, data: st.DataObject) -> None:
    blob = data.draw(mutated(IDX_SOURCES))
    # compressing after the damage gives a sound gzip stream around a damaged IDX file
    _check(read_idx, workdir / "mutated-idx1-ubyte", blob)
    _check(read_idx, workdir / "mutated.gz", gzip.compress(blob, mtime=0))


_SIZES = st.one_of(
    st.integers(0, 5),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0, 10**6, 2**31, 2**32 - 1]),
)


@FUZZ
@given(
    code=st.sampled_from([*IDX_TYPES, 0x00, 0x0A, 0xFF]),
    dims=st.lists(_SIZES, min_size=1, max_size=70),
    payload=st.binary(max_size=64),
    gz=st.booleans(),
)
def test_idx_forged_headers(
    workdir: Path, code: int, dims: list[int], payload: bytes, gz: bool
) -> None:
    blob = bytes([0, 0, code, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes() + payload
    _check(read_idx, workdir / "forged-idx", gzip.compress(blob) if gz else blob)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    dims=st.lists(st.integers(10**3, 2**32 - 1), min_size=2, max_size=4).filter(
        lambda d: np.prod(d, dtype=object) >= 10**12
    ),
    payload=st.binary(max_size=2000),
    gz=st.booleans(),
)
def test_idx_header_claiming_a_terabyte_is_refused_before_allocating(
    workdir: Path, dims: list[int], payload: bytes, gz: bool
) -> None:
    blob = bytes([0, 0, 0x08, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes() + payload
    path = workdir / "terabyte-idx"
    path.write_bytes(gzip.compress(blob) if gz else blob)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"terabyte-idx: (truncated|impossible header)"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"peak {peak / 1e6:.1f} MB for a header claiming {dims}"


# -- Kaggle CSV -------------------------------------------------------------------------


def _csv(labels: bool, rows: int, newline: str = "\n", bom: bool = False) -> bytes:
    header = ",".join((["label"] if labels else []) + [f"pixel{i}" for i in range(6)])
    lines = [header] + [
        ",".join(
            str(v) for v in ([r % 10] if labels else []) + [(r * 37 + c) % 256 for c in range(6)]
        )
        for r in range(rows)
    ]
    return ("\ufeff" if bom else "").encode() + (newline.join(lines) + newline).encode()


CSV_FILES = [
    _csv(True, 8),
    _csv(False, 8),
    _csv(True, 5, newline="\r\n", bom=True),
    _csv(False, 3, newline="\r"),
]
CSV_SOURCES = CSV_FILES + [gzip.compress(blob, mtime=0) for blob in CSV_FILES]


@FUZZ
@given(data=st.data())
def test_csv_random_bytes_and_text(workdir: Path, data: st.DataObject) -> None:
    blob = data.draw(
        st.one_of(
            st.binary(max_size=400),
            st.text(max_size=200).map(str.encode),
            st.text(alphabet="0123456789,;\t \r\n-+pixellab", max_size=200).map(str.encode),
        )
    )
    _check(load_kaggle_csv, workdir / "random.csv", _maybe_gzip(data.draw, blob))


@FUZZ
@given(data=st.data())
def test_csv_mutated_valid_files(workdir: Path, data: st.DataObject) -> None:
    blob = data.draw(mutated(CSV_SOURCES))
    _check(load_kaggle_csv, workdir / "mutated.csv", blob)
    _check(load_kaggle_csv, workdir / "mutated.csv.gz", gzip.compress(blob, mtime=0))


@FUZZ
@given(
    names=st.lists(
        st.sampled_from(["label", "pixel0", "pixel1", "pixel2", "id", "", "pixel", "Label"]),
        min_size=0,
        max_size=5,
    ),
    sep=st.sampled_from([",", ";", "\t", "|", " "]),
    rows=st.lists(
        st.lists(
            st.one_of(
                st.integers(-300, 300).map(str),
                st.sampled_from(["", " ", "1.5", "nan", "1e3", "0x1", "9" * 30, "\x00", "\udcff"]),
            ),
            max_size=5,
        ),
        max_size=6,
    ),
)
def test_csv_forged_headers_and_fields(
    workdir: Path, names: list[str], sep: str, rows: list[list[str]]
) -> None:
    lines = [sep.join(names)] + [",".join(row) for row in rows]
    blob = "\n".join(lines).encode("utf-8", "surrogateescape")
    _check(load_kaggle_csv, workdir / "forged.csv", blob)
