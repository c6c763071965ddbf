"""IDX reader/writer: round trips and every way a file can be broken."""

from __future__ import annotations

import gzip
import os
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from handgrad.data import DataError, load_idx_dataset, load_mnist, read_idx, write_idx
from handgrad.data.idx import write_atomic
from handgrad.data.mnist import MNIST_FILES
from tests.conftest import umask


def _header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes()


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(tmp_path: Path, suffix: str, dtype: type) -> None:
    rng = np.random.default_rng(1)
    arr: np.ndarray = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.dtype.isnative
    assert back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, arr)
    assert back.flags.writeable
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


def test_written_bytes_are_big_endian_idx(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x.idx", np.array([[1, 258]], dtype=np.int16))
    assert path.read_bytes() == _header(0x0B, (1, 2)) + b"\x00\x01\x01\x02"


def test_reads_hand_made_file(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(_header(0x08, (3,)) + bytes([7, 0, 9]))
    np.testing.assert_array_equal(read_idx(path), [7, 0, 9])


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "plain-name"
    path.write_bytes(gzip.compress(_header(0x08, (2,)) + b"\x01\x02"))
    np.testing.assert_array_equal(read_idx(path), [1, 2])


def test_truncated_payload(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_header(0x08, (10000, 28, 28)) + bytes(123)))
    with pytest.raises(
        DataError,
        match=r"t10k-images-idx3-ubyte\.gz: truncated: header says 10000x28x28 = 7840000 "
        r"bytes of uint8, file has 123 bytes",
    ):
        read_idx(path)


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match=r"short: truncated header: 3 dimensions need 16 bytes"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_trailing_bytes(tmp_path: Path, gz: bool) -> None:
    path = tmp_path / "x.idx"
    blob = _header(0x0C, (2,)) + bytes(8 + 5)
    path.write_bytes(gzip.compress(blob) if gz else blob)
    with pytest.raises(
        DataError, match=r"x\.idx: 5 trailing bytes: header says 2 = 8 bytes of int32, file has 13"
    ):
        read_idx(path)


@pytest.mark.parametrize(
    "magic", [b"\x01\x00\x08\x01", b"\x00\x07\x08\x01", b"\x00\x00\x08\x00", b"PK\x03\x04"]
)
def test_bad_magic(tmp_path: Path, magic: bytes) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(magic + bytes(8))
    with pytest.raises(DataError, match=rf"x\.idx: bad magic number 0x{magic.hex()}"):
        read_idx(path)


def test_gz_name_but_not_gzip_says_so(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DataError, match=r"bad magic number.*not gzip-compressed"):
        read_idx(path)


def test_too_short_for_magic(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match=r"x\.idx: truncated: 2 bytes, too short"):
        read_idx(path)


def test_unknown_type_code(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(_header(0x0A, (1,)) + bytes(1))
    with pytest.raises(DataError, match=r"x\.idx: unknown IDX type code 0x0a; expected one of"):
        read_idx(path)


@pytest.mark.parametrize("damage", ["cut", "flip", "cut-trailer", "crc", "length"])
def test_corrupt_gzip(tmp_path: Path, damage: str) -> None:
    blob = bytearray(gzip.compress(_header(0x08, (1000,)) + bytes(range(250)) * 4))
    if damage == "cut":
        blob = blob[: len(blob) // 2]
    elif damage == "cut-trailer":  # every payload byte is there, the CRC is not
        blob = blob[:-8]
    elif damage == "crc":
        blob[-8] ^= 0xFF
    elif damage == "length":
        blob[-4] ^= 0xFF
    else:
        blob[len(blob) // 2] ^= 0xFF
    path = tmp_path / "x.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"x\.gz: corrupt gzip stream"):
        read_idx(path)


def test_header_claiming_huge_payload_is_truncated_not_allocated(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"  # 2**62 bytes claimed by a 40-byte file
    path.write_bytes(gzip.compress(_header(0x08, (2**31, 2**31)) + bytes(3)))
    with pytest.raises(DataError, match=r"x\.gz: truncated: header says 2147483648x2147483648"):
        read_idx(path)


def _peak_of_failure(path: Path, match: str) -> int:
    """Peak bytes traced (NumPy's arrays included) while ``read_idx(path)`` fails as expected."""
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=match):
            read_idx(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("gz", [False, True])
def test_more_dimensions_than_numpy_allows(tmp_path: Path, gz: bool) -> None:
    # NumPy's "maximum supported dimension for an ndarray is 64" escaped, naming no file.
    path = tmp_path / "deep.idx"
    blob = _header(0x08, (1,) * 65) + b"\x07"
    path.write_bytes(gzip.compress(blob) if gz else blob)
    with pytest.raises(DataError, match=r"deep\.idx: header declares 65 dimensions; NumPy arrays"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_empty_array_with_impossible_dimensions(tmp_path: Path, gz: bool) -> None:
    # Zero images of 2**32-1 x 2**32-1 pixels: no payload, but NumPy's "array is too big".
    path = tmp_path / "zero.idx"
    blob = _header(0x08, (0, 2**32 - 1, 2**32 - 1, 2**32 - 1))
    path.write_bytes(gzip.compress(blob) if gz else blob)
    with pytest.raises(
        DataError,
        match=r"zero\.idx: impossible header: shape \(0, 4294967295, 4294967295, 4294967295\) "
        r"of uint8 is beyond the largest array NumPy can index .* zero size makes it empty",
    ):
        read_idx(path)
    path.write_bytes(_header(0x0E, (0, 7, 2**32 - 1)))  # empty and possible: read
    assert read_idx(path).shape == (0, 7, 2**32 - 1)


@pytest.mark.parametrize("what", ["missing", "directory", "unreadable"])
def test_unreadable_file_is_a_data_error(tmp_path: Path, what: str) -> None:
    path = tmp_path / "x.idx"
    if what == "directory":
        path.mkdir()
    elif what == "unreadable":
        path.write_bytes(_header(0x08, (1,)) + b"\x01")
        path.chmod(0)
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions do not stop reading")
    with pytest.raises(DataError, match=r"x\.idx: cannot read: |x\.idx: is a directory"):
        read_idx(path)


def _fifo_with(path: Path, blob: bytes) -> threading.Thread:
    """A FIFO at ``path`` that a thread fills with ``blob`` once it is opened."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(path)

    def write() -> None:
        with open(path, "wb") as f:
            try:
                f.write(blob)
            except BrokenPipeError:
                pass  # the reader stopped early, as it should for a bad file

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("gz", [False, True])
def test_reads_from_a_fifo(tmp_path: Path, gz: bool) -> None:
    # Detecting gzip rewound the file: io.UnsupportedOperation on a FIFO or pipe.
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    blob = _header(0x0B, arr.shape) + arr.astype(">i2").tobytes()
    path = tmp_path / "fifo"
    thread = _fifo_with(path, gzip.compress(blob) if gz else blob)
    np.testing.assert_array_equal(read_idx(path), arr)
    thread.join(5)


def test_forged_size_is_refused_before_allocating(tmp_path: Path) -> None:
    # 10**12 elements claimed, 3 bytes there: a raw file's size is known before reading.
    path = tmp_path / "forged.idx"
    path.write_bytes(_header(0x08, (10**6, 10**6)) + bytes(3))
    peak = _peak_of_failure(path, r"forged\.idx: truncated: header says 1000000x1000000 = ")
    assert peak < 1e6, f"peak {peak / 1e6:.1f} MB"


def test_forged_size_from_a_fifo_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    # A FIFO has no size to compare with: the array grows only as bytes arrive.
    path = tmp_path / "fifo"
    thread = _fifo_with(path, _header(0x08, (10**6, 10**6)) + bytes(3_000_000))
    peak = _peak_of_failure(path, r"fifo: truncated: header says 1000000x1000000 = .* has 3000000")
    thread.join(5)
    assert peak < 20e6, f"peak {peak / 1e6:.1f} MB for 3 MB claiming 1 TB"


def test_forged_size_in_gzip_within_the_deflate_bound_is_not_allocated(tmp_path: Path) -> None:
    # 1 MB of incompressible data claiming 10**9 bytes: under deflate's 1032:1 bound, so
    # the reader allocated the whole gigabyte before finding the stream short.
    path = tmp_path / "forged.gz"
    payload = np.random.default_rng(0).integers(0, 256, 10**6, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(_header(0x08, (1000, 1000, 1000)) + payload))
    peak = _peak_of_failure(path, r"forged\.gz: truncated: header says 1000x1000x1000")
    assert peak < 20e6, f"peak {peak / 1e6:.1f} MB for a 1 MB stream claiming 1 GB"


def test_gzip_bomb_after_the_payload_is_not_read_to_its_end(tmp_path: Path) -> None:
    # 64 MB of zeros after a 2-byte payload: reported after a chunk, not decompressed whole.
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(_header(0x08, (2,)) + bytes(2 + 64 * 2**20)))
    with pytest.raises(
        DataError, match=r"bomb\.gz: at least 1048577 trailing bytes: header says 2 = 2 bytes"
    ):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float64])
def test_read_arrays_are_fresh_native_and_writable(
    tmp_path: Path, suffix: str, dtype: type
) -> None:
    arr = np.arange(60, dtype=dtype).reshape(3, 4, 5)
    back = read_idx(write_idx(tmp_path / f"a{suffix}", arr))
    assert back.flags.writeable and back.flags.c_contiguous
    assert back.dtype.isnative and back.dtype.byteorder in "=|"
    back[0, 0, 0] = 7  # really writable, and nothing else changes
    np.testing.assert_array_equal(read_idx(tmp_path / f"a{suffix}"), arr)


@pytest.mark.parametrize(("suffix", "dtype"), [("", np.uint8), ("", np.int32), (".gz", np.uint8)])
def test_read_idx_peak_memory_is_about_the_payload(
    tmp_path: Path, suffix: str, dtype: type
) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 100, (2000, 64, 64)).astype(dtype)  # 8 MB of uint8
    path = write_idx(tmp_path / f"big{suffix}", arr)
    tracemalloc.start()
    try:
        back = read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(back, arr)
    # Reading into bytes and then copying into the array peaked at twice the payload.
    assert peak < 1.3 * arr.nbytes, f"peak {peak / 1e6:.1f} MB for {arr.nbytes / 1e6:.1f} MB"


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=oct)
def test_written_files_have_the_mode_a_plain_open_gives(tmp_path: Path, mask: int) -> None:
    with umask(mask):
        idx = write_idx(tmp_path / "a.idx", np.zeros(3, dtype=np.uint8))
        write_atomic(tmp_path / "b.csv", b"ImageId,Label\n")  # the Kaggle CSV writer's helper
    for path in (idx, tmp_path / "b.csv"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.idx", "b.csv"]


def test_write_refuses_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"IDX has no element type for int64"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"1 to 255 dimensions"):
        write_idx(tmp_path / "x.idx", np.zeros((), dtype=np.uint8))


# -- four-file datasets ------------------------------------------------------------


def write_fake_mnist(
    directory: Path,
    n_train: int = 12,
    n_test: int = 5,
    size: tuple[int, int] = (28, 28),
    gz: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Four small MNIST-format files; returns the arrays written, keyed by file name."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        MNIST_FILES[0]: rng.integers(0, 256, (n_train, *size), dtype=np.uint8),
        MNIST_FILES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        MNIST_FILES[2]: rng.integers(0, 256, (n_test, *size), dtype=np.uint8),
        MNIST_FILES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(directory / (name if gz else name.removesuffix(".gz")), arr)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_directory(tmp_path: Path, gz: bool) -> None:
    written = write_fake_mnist(tmp_path, gz=gz)
    data = load_mnist(tmp_path)
    assert data.x_train.dtype == np.uint8 and data.x_train.shape == (12, 28, 28)
    assert data.y_train.dtype == np.int64 and data.y_test.shape == (5,)
    for arr, name in zip(data, MNIST_FILES, strict=True):
        np.testing.assert_array_equal(arr, written[name])


def test_image_size_comes_from_the_file(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, size=(7, 9))
    data = load_idx_dataset(tmp_path)
    assert data.x_train.shape == (12, 7, 9) and data.x_test.shape == (5, 7, 9)


def test_label_count_differs_from_image_count(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / MNIST_FILES[3], np.zeros(4, dtype=np.uint8))
    with pytest.raises(
        DataError, match=r"t10k-labels-idx1-ubyte\.gz: 4 labels, but t10k-images.* has 5 images"
    ):
        load_mnist(tmp_path)


def test_labels_out_of_range(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / MNIST_FILES[1], np.array([0, 1, 2, 12] + [0] * 8, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels must be in 0\.\.9, found 12 at index 3"):
        load_mnist(tmp_path)
    assert len(load_idx_dataset(tmp_path).y_train) == 12  # no class count: no check


def test_images_must_be_3d_uint8(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / MNIST_FILES[0], np.zeros((12, 784), dtype=np.uint8))
    with pytest.raises(DataError, match=r"expected uint8 images of shape \(N, H, W\)"):
        load_mnist(tmp_path)


def test_train_and_test_image_sizes_must_agree(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / MNIST_FILES[2], np.zeros((5, 20, 20), dtype=np.uint8))
    with pytest.raises(DataError, match=r"training images are \(28, 28\) but test images"):
        load_mnist(tmp_path)
