"""Kaggle "Digit Recognizer" CSV files: ``train.csv``, ``test.csv`` and the submission.

``train.csv`` has the header ``label,pixel0,...,pixel783`` and ``test.csv`` the
header ``pixel0,...,pixel783``; every row holds integers, pixels in 0..255 and
labels in 0..9. A submission is ``ImageId,Label`` with ImageId counting from 1.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import BinaryIO, TextIO, cast

import numpy as np

from handgrad.data._open import GZIP_ERRORS, open_data
from handgrad.data.errors import DataError
from handgrad.data.idx import write_atomic

_MAX_SHOWN = 60  # characters of a bad field or header quoted in an error
_BLOCK_LINES = 2048  # lines per np.loadtxt call: fast, and a bad line costs one block
# The longest header read (about 100,000 pixel columns) and, per value, the most
# characters a data line may use: '255,' needs 4. A longer line is not read whole.
_MAX_HEADER_CHARS = 1 << 20
_CHARS_PER_VALUE = 32
# What np.loadtxt reads as an integer, once stripped of whitespace (as it does).
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars", " ": "spaces"}
_EXPECTED_HEADER = "'label,pixel0,...,pixel783' (train) or 'pixel0,...,pixel783' (test)"


def _short(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _undecodable(where: str, line: str) -> DataError | None:
    """The error for a line holding bytes that are not UTF-8 (read as lone surrogates)."""
    if line.isascii():
        return None
    for i, char in enumerate(line, start=1):
        if "\udc80" <= char <= "\udcff":
            return DataError(
                f"{where}: not UTF-8 text (byte 0x{ord(char) - 0xDC00:02x} at character {i}); "
                "a CSV of integers was expected"
            )
    return None


def _readline(path: Path, text: TextIO, lineno: int, limit: int, what: str) -> str:
    """The next line of ``text`` (``''`` at the end), refusing one longer than ``limit``."""
    line = text.readline(limit + 1)
    if len(line) > limit and not line.endswith("\n"):
        raise DataError(
            f"{path}, line {lineno}: longer than {limit} characters, too long for {what} "
            f"(starts {_short(line)!r}); is it a CSV file with one row per line?"
        )
    return line


def _parse_header(path: Path, line: str) -> tuple[bool, int]:
    """``(has_label, n_pixels)`` from the header line, or a DataError saying what is wrong."""
    where = f"{path}, line 1"
    error = _undecodable(where, line)
    if error:
        raise error
    text = line.strip()
    names = [name.strip() for name in text.split(",")]
    has_label = bool(names) and names[0] == "label"
    pixels = names[1:] if has_label else names
    expected = [f"pixel{i}" for i in range(len(pixels))]
    if pixels and pixels == expected:
        return has_label, len(pixels)
    separator = next(
        (sep for sep in _SEPARATORS if "," not in text and len(text.split(sep)) > 1), None
    )
    if separator is not None:
        wrong = f"values separated by {_SEPARATORS[separator]}, not commas"
    else:
        wrong = next(
            (
                f"column {i + 1 + has_label} is {_short(got)!r}, expected {want!r}"
                for i, (got, want) in enumerate(zip(pixels, expected, strict=True))
                if got != want
            ),
            "no pixel columns",
        )
    raise DataError(
        f"{where}: bad header ({wrong}): expected a comma-separated {_EXPECTED_HEADER}, "
        f"got {_short(text)!r}"
    )


def _find_bad_line(
    path: Path, lines: list[str], first_lineno: int, has_label: bool, n_cols: int
) -> DataError | None:
    """Check ``lines`` one by one in Python: slow, so only run on a block NumPy refused."""
    for lineno, line in enumerate(lines, start=first_lineno):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        error = _undecodable(where, line)
        if error:
            return error
        fields = line.strip().split(",")
        if len(fields) != n_cols:
            return DataError(
                f"{where}: expected {n_cols} comma-separated values (as in the header), "
                f"got {len(fields)}"
            )
        for col, field in enumerate(fields, start=1):
            number = field.strip()
            if not _INTEGER.match(number):
                return DataError(f"{where}, column {col}: {_short(field)!r} is not an integer")
            # int() refuses over 4300 digits; no value in range needs more than a few
            long = len(number.lstrip("+-").lstrip("0")) > 10
            is_label = has_label and col == 1
            high = 9 if is_label else 255
            if long or not 0 <= int(number) <= high:
                what = "label" if is_label else "pixel value"
                shown = _short(number) if long else int(number)
                return DataError(f"{where}, column {col}: {what} {shown} is out of range 0..{high}")
    return None


def _parse_block(
    path: Path, lines: list[str], first_lineno: int, has_label: bool, n_cols: int
) -> np.ndarray:
    """``uint8 (rows, n_cols)`` from a block of CSV lines, or the DataError of its first bad one."""
    if not any(map(str.strip, lines)):
        return np.zeros((0, n_cols), dtype=np.uint8)
    block: np.ndarray | None
    try:
        block = np.loadtxt(lines, delimiter=",", dtype=np.int32, ndmin=2, comments=None)
    except ValueError:
        block = None
    if block is not None and block.shape[1] == n_cols:
        high = np.full(n_cols, 255, dtype=np.int32)
        high[0] = 9 if has_label else 255
        if ((block >= 0) & (block <= high)).all():
            return block.astype(np.uint8)
    error = _find_bad_line(path, lines, first_lineno, has_label, n_cols)
    raise error or DataError(
        f"{path}, lines {first_lineno}..{first_lineno + len(lines) - 1}: "
        f"could not parse as {n_cols} comma-separated integers"
    )


def load_kaggle_csv(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a Digit Recognizer ``train.csv`` or ``test.csv`` (optionally gzip-compressed).

    Parsed by NumPy's C reader in blocks of lines (42000 rows in about a second);
    only a block that fails is scanned again in Python, to name its first bad line.
    Memory follows the rows really read: no line longer than the header allows
    (32 characters per value) is read whole, and a gzip stream is decompressed
    as it is read. A FIFO or pipe works too.

    Parameters
    ----------
    path : str or path-like
        The CSV file, UTF-8 (a byte-order mark is fine), any line endings.
        Compression is detected from the content, not the name.

    Returns
    -------
    x : numpy.ndarray
        ``uint8 (N, 784)`` pixels (``(N, P)`` for a header with P pixel columns).
    y : numpy.ndarray or None
        ``int64 (N,)`` labels for ``train.csv``; None for ``test.csv``.

    Raises
    ------
    DataError
        Naming the file, and the line where there is one: a file that cannot be
        read, a corrupt or truncated gzip stream, bytes that are not UTF-8, an
        empty file or one with only a header, bad header (a short excerpt, and the
        separator when it is not a comma), a line too long, wrong number of
        values, a value that is not an integer, a pixel outside 0..255 or a label
        outside 0..9.
    """
    path = Path(path)
    blocks: list[np.ndarray] = []
    lineno = 1
    with open_data(path) as opened:
        # Undecodable bytes become lone surrogates, reported with their line.
        text = io.TextIOWrapper(
            cast(BinaryIO, opened.stream),
            encoding="utf-8-sig",
            errors="surrogateescape",
            newline=None,
        )
        try:
            header = _readline(path, text, 1, _MAX_HEADER_CHARS, "a CSV header")
            if not header.strip():
                raise DataError(f"{path}, line 1: empty file, expected a header line")
            has_label, n_pixels = _parse_header(path, header)
            n_cols = n_pixels + has_label
            limit = _CHARS_PER_VALUE * n_cols + 256
            first = lineno = 2
            while True:
                lines: list[str] = []
                while len(lines) < _BLOCK_LINES:
                    line = _readline(path, text, lineno, limit, f"{n_cols} values")
                    if not line:
                        break
                    lines.append(line)
                    lineno += 1
                if not lines:
                    break
                blocks.append(_parse_block(path, lines, first, has_label, n_cols))
                first = lineno
        except GZIP_ERRORS as exc:
            raise DataError(f"{path}, line {lineno}: corrupt gzip stream ({exc})") from exc
        except OSError as exc:
            raise DataError(f"{path}, line {lineno}: cannot read: {exc.strerror or exc}") from exc
        finally:
            text.detach()  # the stream is open_data's to close
    table = np.concatenate(blocks) if blocks else np.zeros((0, n_cols), dtype=np.uint8)
    if len(table) == 0:
        raise DataError(f"{path}: no data rows after the header line (an empty file)")
    if not has_label:
        return table, None
    return table[:, 1:].copy(), table[:, 0].astype(np.int64)


def write_kaggle_submission(path: str | os.PathLike[str], labels: np.ndarray) -> Path:
    """Write predicted digits as a Kaggle submission, atomically.

    The output is ``ImageId,Label`` followed by one ``i,label`` line per image,
    ``i`` counting from 1.

    Parameters
    ----------
    path : str or path-like
        Destination (written to a temporary file, then renamed into place).
    labels : numpy.ndarray
        ``(N,)`` integer predictions in 0..9, e.g. ``logits.argmax(axis=1)``.
    """
    path = Path(path)
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TypeError(
            f"write_kaggle_submission expects integer labels of shape (N,), got {arr.dtype} "
            f"array of shape {arr.shape}; use predictions.argmax(axis=1)"
        )
    bad = np.flatnonzero((arr < 0) | (arr > 9))
    if bad.size:
        raise ValueError(
            f"write_kaggle_submission: labels must be digits 0..9, got {arr[bad[0]]} at "
            f"index {bad[0]}"
        )
    rows = "".join(f"{i},{label}\n" for i, label in enumerate(arr.tolist(), start=1))
    write_atomic(path, ("ImageId,Label\n" + rows).encode("ascii"))
    return path
