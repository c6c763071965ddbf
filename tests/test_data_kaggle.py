"""Kaggle Digit Recognizer CSV: loading train/test files, errors with line numbers, submissions."""

from __future__ import annotations

import gzip
import os
import re
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from handgrad.cli import main
from handgrad.data import DataError, load_kaggle_csv, write_kaggle_submission

PIXELS = ",".join(f"pixel{i}" for i in range(784))


def _csv(path: Path, header: str, rows: list[list[int]] | np.ndarray) -> Path:
    lines = [header] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def train_rows() -> np.ndarray:
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 256, (6, 785))
    rows[:, 0] = [3, 1, 4, 1, 5, 9]
    rows[0, 1:] = 0
    rows[1, 1:] = 255
    return rows


def test_train_csv(tmp_path: Path, train_rows: np.ndarray) -> None:
    path = _csv(tmp_path / "train.csv", "label," + PIXELS, train_rows)
    x, y = load_kaggle_csv(path)
    assert x.dtype == np.uint8 and x.shape == (6, 784)
    assert y is not None and y.dtype == np.int64
    np.testing.assert_array_equal(y, [3, 1, 4, 1, 5, 9])
    np.testing.assert_array_equal(x, train_rows[:, 1:])


def test_test_csv_has_no_labels(tmp_path: Path, train_rows: np.ndarray) -> None:
    path = _csv(tmp_path / "test.csv", PIXELS, train_rows[:, 1:])
    x, y = load_kaggle_csv(path)
    assert y is None
    np.testing.assert_array_equal(x, train_rows[:, 1:])


def test_crlf_bom_blank_lines_and_gzip(tmp_path: Path, train_rows: np.ndarray) -> None:
    body = "\r\n".join(["label," + PIXELS] + [",".join(map(str, r)) for r in train_rows])
    path = tmp_path / "train.csv.gz"
    path.write_bytes(gzip.compress(("\ufeff" + body + "\r\n\r\n").encode("utf-8")))
    x, y = load_kaggle_csv(path)
    assert x.shape == (6, 784) and y is not None and y.tolist() == [3, 1, 4, 1, 5, 9]


def test_single_row(tmp_path: Path, train_rows: np.ndarray) -> None:
    x, y = load_kaggle_csv(_csv(tmp_path / "one.csv", "label," + PIXELS, train_rows[:1]))
    assert x.shape == (1, 784) and y is not None and y.shape == (1,)


@pytest.mark.parametrize("header", ["label," + PIXELS, PIXELS])
@pytest.mark.parametrize("tail", ["", "\n", "\n\n\r\n"])
def test_header_only_is_refused(tmp_path: Path, header: str, tail: str) -> None:
    # Nothing to train on or predict: an error naming the file, not an empty array that
    # fails later in a split or a zip().
    (tmp_path / "none.csv").write_text(header + tail)
    with pytest.raises(DataError, match=r"none\.csv: no data rows after the header line"):
        load_kaggle_csv(tmp_path / "none.csv")


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("lbl," + PIXELS, r"column 1 is 'lbl', expected 'pixel0'"),
        ("label," + PIXELS.replace("pixel5,", "pixel05,"), r"column 7 is 'pixel05'"),
        ("id,label", r"column 1 is 'id'"),
        ("label", r"no pixel columns"),
    ],
)
def test_bad_header(tmp_path: Path, header: str, problem: str) -> None:
    path = _csv(tmp_path / "train.csv", header, [])
    with pytest.raises(DataError, match=rf"train\.csv, line 1: bad header \({problem}"):
        load_kaggle_csv(path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match=r"e\.csv, line 1: empty file"):
        load_kaggle_csv(tmp_path / "e.csv")


def test_wrong_column_count(tmp_path: Path, train_rows: np.ndarray) -> None:
    rows = [list(r) for r in train_rows]
    rows[3] = rows[3][:-1]
    path = _csv(tmp_path / "train.csv", "label," + PIXELS, rows)
    with pytest.raises(
        DataError, match=r"train\.csv, line 5: expected 785 comma-separated values .*, got 784"
    ):
        load_kaggle_csv(path)


def test_uniformly_short_rows(tmp_path: Path, train_rows: np.ndarray) -> None:
    path = _csv(tmp_path / "test.csv", PIXELS, train_rows[:, 2:])
    with pytest.raises(DataError, match=r"test\.csv, line 2: expected 784 .*, got 783"):
        load_kaggle_csv(path)


@pytest.mark.parametrize(
    ("col", "value", "problem"),
    [
        (100, 256, r"column 100: pixel value 256 is out of range 0\.\.255"),
        (785, -1, r"column 785: pixel value -1 is out of range 0\.\.255"),
        (1, 10, r"column 1: label 10 is out of range 0\.\.9"),
    ],
)
def test_value_out_of_range(
    tmp_path: Path, train_rows: np.ndarray, col: int, value: int, problem: str
) -> None:
    rows = train_rows.copy()
    rows[4, col - 1] = value
    path = _csv(tmp_path / "train.csv", "label," + PIXELS, rows)
    with pytest.raises(DataError, match=rf"train\.csv, line 6, {problem}"):
        load_kaggle_csv(path)


def test_line_numbers_count_blank_lines(tmp_path: Path, train_rows: np.ndarray) -> None:
    lines = ["label," + PIXELS, "", *(",".join(map(str, r)) for r in train_rows)]
    lines[4] = lines[4].replace(",", ",300,", 1).rsplit(",", 1)[0]  # file line 5: pixel0=300
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"t\.csv, line 5, column 2: pixel value 300"):
        load_kaggle_csv(tmp_path / "t.csv")


def test_not_an_integer(tmp_path: Path, train_rows: np.ndarray) -> None:
    rows = [list(map(str, r)) for r in train_rows]
    rows[2][10] = "1.5"
    path = tmp_path / "train.csv"
    path.write_text("\n".join(["label," + PIXELS] + [",".join(r) for r in rows]) + "\n")
    with pytest.raises(DataError, match=r"line 4, column 11: '1\.5' is not an integer"):
        load_kaggle_csv(path)


def test_submission_text_is_exact(tmp_path: Path) -> None:
    path = write_kaggle_submission(tmp_path / "sub.csv", np.array([7, 2, 1, 0], dtype=np.int64))
    assert path.read_bytes() == b"ImageId,Label\n1,7\n2,2\n3,1\n4,0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]  # no temp file left


def test_submission_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sub.csv"
    path.write_text("old contents")
    write_kaggle_submission(path, np.array([5], dtype=np.uint8))
    assert path.read_text() == "ImageId,Label\n1,5\n"


def test_submission_rejects_bad_labels(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"integer labels of shape \(N,\), got float64"):
        write_kaggle_submission(tmp_path / "s.csv", np.zeros((3, 10)))
    with pytest.raises(ValueError, match=r"digits 0\.\.9, got 10 at index 1"):
        write_kaggle_submission(tmp_path / "s.csv", np.array([1, 10]))
    assert not (tmp_path / "s.csv").exists()


def test_line_numbers_past_the_first_block(tmp_path: Path) -> None:
    # 3000 rows span two parsing blocks; a header with 4 pixel columns is accepted as well.
    rows = np.tile([[1, 2, 3, 4]], (3000, 1))
    rows[2500, 2] = 999
    path = _csv(tmp_path / "small.csv", "pixel0,pixel1,pixel2,pixel3", rows)
    with pytest.raises(DataError, match=r"small\.csv, line 2502, column 3: pixel value 999"):
        load_kaggle_csv(path)
    rows[2500, 2] = 9
    x, y = load_kaggle_csv(_csv(path, "pixel0,pixel1,pixel2,pixel3", rows))
    assert y is None and x.shape == (3000, 4) and x[2500].tolist() == [1, 2, 9, 4]


# -- damaged, hostile and unreadable files: one DataError naming the file (and line) --


def _train_bytes(train_rows: np.ndarray) -> bytes:
    lines = ["label," + PIXELS] + [",".join(map(str, r)) for r in train_rows]
    return ("\n".join(lines) + "\n").encode()


def test_bytes_that_are_not_utf8_name_the_line(tmp_path: Path, train_rows: np.ndarray) -> None:
    # UnicodeDecodeError escaped, naming neither the file nor the line.
    blob = bytearray(_train_bytes(train_rows))
    third = blob.index(b"\n", blob.index(b"\n", blob.index(b"\n") + 1) + 1)
    blob[third + 5] = 0xFF  # line 4, character 5
    (tmp_path / "t.csv").write_bytes(bytes(blob))
    with pytest.raises(
        DataError, match=r"t\.csv, line 4: not UTF-8 text \(byte 0xff at character 5\)"
    ):
        load_kaggle_csv(tmp_path / "t.csv")


def test_binary_file_is_refused_at_line_1(tmp_path: Path) -> None:
    (tmp_path / "image.csv").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(DataError, match=r"image\.csv, line 1: not UTF-8 text \(byte 0x89"):
        load_kaggle_csv(tmp_path / "image.csv")


@pytest.mark.parametrize("damage", ["cut", "flip", "crc", "header", "deflate", "trailing"])
def test_damaged_gzip_is_a_data_error(tmp_path: Path, train_rows: np.ndarray, damage: str) -> None:
    # EOFError, zlib.error and gzip.BadGzipFile escaped as they were.
    blob = bytearray(gzip.compress(_train_bytes(train_rows)))
    if damage == "cut":
        blob = blob[: len(blob) // 2]
    elif damage == "flip":
        blob[len(blob) // 2] ^= 0xFF
    elif damage == "crc":
        blob[-8] ^= 0xFF
    elif damage == "header":
        blob[2] = 7  # compression method 7: unknown
    elif damage == "deflate":
        blob[10] ^= 0xFF  # the first byte of the deflate stream: zlib.error
    else:
        blob += b"garbage after the stream"
    path = tmp_path / "train.csv.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"train\.csv\.gz(, line \d+)?: corrupt gzip stream \("):
        load_kaggle_csv(path)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    # "[Errno 2] No such file or directory: '...'" was all `handgrad kaggle` said.
    with pytest.raises(DataError, match=r"test\.csv: cannot read: No such file or directory$"):
        load_kaggle_csv(tmp_path / "test.csv")


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolons"), ("\t", "tabs")])
def test_other_separator_is_named_with_a_short_excerpt(
    tmp_path: Path, train_rows: np.ndarray, sep: str, name: str
) -> None:
    # The whole 7 KB header was quoted back.
    path = tmp_path / "semi.csv"
    path.write_bytes(_train_bytes(train_rows).replace(b",", sep.encode()))
    with pytest.raises(DataError) as info:
        load_kaggle_csv(path)
    message = str(info.value)
    assert f"semi.csv, line 1: bad header (values separated by {name}, not commas): " in message
    assert "expected a comma-separated 'label,pixel0,...,pixel783'" in message
    assert len(message) < 300 + len(str(path)) and "\n" not in message


def test_long_bad_column_name_is_shortened(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("label," + "x" * 5000 + "\n1,2\n")
    with pytest.raises(DataError, match=r"column 2 is 'x{60}\.\.\.', expected 'pixel0'") as info:
        load_kaggle_csv(path)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("where", ["header", "row"])
def test_line_without_end_is_not_read_whole(tmp_path: Path, where: str) -> None:
    # 64 MB with no newline, gzip-compressed to 64 KB: refused after a bounded read.
    body = b"1" * (64 * 2**20)
    blob = body if where == "header" else b"label,pixel0\n" + body
    path = tmp_path / "long.csv.gz"
    path.write_bytes(gzip.compress(blob))
    line = 1 if where == "header" else 2
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=rf"long\.csv\.gz, line {line}: longer than \d+ char"):
            load_kaggle_csv(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"peak {peak / 1e6:.1f} MB"


def test_huge_number_is_out_of_range_not_a_crash(tmp_path: Path) -> None:
    # int() refuses more than 4300 digits with its own ValueError.
    header = ",".join(["label"] + [f"pixel{i}" for i in range(200)])
    path = tmp_path / "big.csv"
    path.write_text(f"{header}\n1," + "9" * 5000 + ",0" * 199 + "\n")
    with pytest.raises(DataError, match=r"line 2, column 2: pixel value 9{60}\.\.\. is out of"):
        load_kaggle_csv(path)


@pytest.mark.parametrize("field", ["1_0", "\u0663", "0x3", "1e2"])
def test_what_python_or_numpy_half_accept_is_not_an_integer(tmp_path: Path, field: str) -> None:
    path = tmp_path / "odd.csv"
    path.write_text(f"pixel0,pixel1\n1,{field}\n")
    with pytest.raises(DataError, match=r"odd\.csv, line 2, column 2: .* is not an integer"):
        load_kaggle_csv(path)


def test_leading_zeros_and_signs_are_integers(tmp_path: Path) -> None:
    path = tmp_path / "z.csv"
    path.write_text("pixel0,pixel1\n" + "0" * 40 + "7, +3\n\x1d4,5\u2003\n")
    x, _ = load_kaggle_csv(path)
    assert x.tolist() == [[7, 3], [4, 5]]


def test_reads_from_a_fifo(tmp_path: Path, train_rows: np.ndarray) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "fifo"
    os.mkfifo(path)

    def write() -> None:
        with open(path, "wb") as f:
            f.write(gzip.compress(_train_bytes(train_rows)))

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    x, y = load_kaggle_csv(path)
    thread.join(5)
    assert y is not None and y.tolist() == [3, 1, 4, 1, 5, 9]
    np.testing.assert_array_equal(x, train_rows[:, 1:])


# -- the command line ------------------------------------------------------------------


def _kaggle(tmp_path: Path, train: Path, test: Path) -> list[str]:
    return [
        "kaggle", str(train), str(test), "--epochs", "1", "--no-save", "--quiet",
        "--submission", str(tmp_path / "s.csv"),
    ]  # fmt: skip


@pytest.mark.parametrize("problem", ["truncated", "missing", "semicolons"])
def test_cli_says_what_is_wrong_with_the_test_csv_in_one_line(
    tmp_path: Path,
    train_rows: np.ndarray,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    problem: str,
) -> None:
    # A truncated .csv.gz printed a traceback and exited 1; a missing one "[Errno 2] ...".
    monkeypatch.delenv("HANDGRAD_DEBUG", raising=False)
    train = tmp_path / "train.csv"
    train.write_bytes(_train_bytes(train_rows))
    test_bytes = _train_bytes(train_rows[:, 1:]).replace(b"label,", b"", 1)
    test = tmp_path / ("test.csv.gz" if problem == "truncated" else "test.csv")
    if problem == "truncated":
        test.write_bytes(gzip.compress(test_bytes)[:-100])
    elif problem == "semicolons":
        test.write_bytes(test_bytes.replace(b",", b";"))
    assert main(_kaggle(tmp_path, train, test)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    expected = {
        "truncated": r", line \d+: corrupt gzip stream \(Compressed file ended before",
        "missing": r": cannot read: No such file or directory",
        "semicolons": r", line 1: bad header \(values separated by semicolons",
    }[problem]
    assert re.match(rf"handgrad kaggle: error: {re.escape(str(test))}{expected}", err), err
    assert len(err) < 400 + len(str(test))
    assert not (tmp_path / "s.csv").exists()
