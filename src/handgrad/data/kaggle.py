"""Kaggle "Digit Recognizer" CSV files: ``train.csv``, ``test.csv`` and the submission.

``train.csv`` has the header ``label,pixel0,...,pixel783`` and ``test.csv`` the
header ``pixel0,...,pixel783``; every row holds integers, pixels in 0..255 and
labels in 0..9. A submission is ``ImageId,Label`` with ImageId counting from 1.
"""

from __future__ import annotations

import gzip
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import numpy as np

from handgrad.data.errors import DataError
from handgrad.data.idx import write_atomic

_MAX_SHOWN = 60  # characters of a bad field or header quoted in an error
_BLOCK_LINES = 2048  # lines per np.loadtxt call: fast, and a bad line costs one block


@contextmanager
def _open_text(path: Path) -> Iterator[TextIO]:
    # utf-8-sig drops the byte-order mark that spreadsheet programs like to add
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8-sig", newline=None) as f:
            yield f
    else:
        with open(path, encoding="utf-8-sig", newline=None) as f:
            yield f


def _short(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _parse_header(path: Path, line: str) -> tuple[bool, int]:
    """``(has_label, n_pixels)`` from the header line, or a DataError saying what is wrong."""
    names = [name.strip() for name in line.strip().split(",")]
    has_label = bool(names) and names[0] == "label"
    pixels = names[1:] if has_label else names
    expected = [f"pixel{i}" for i in range(len(pixels))]
    if not pixels or pixels != expected:
        wrong = next(
            (
                f"column {i + 1 + has_label} is {got!r}, expected {want!r}"
                for i, (got, want) in enumerate(zip(pixels, expected, strict=True))
                if got != want
            ),
            "no pixel columns",
        )
        raise DataError(
            f"{path}, line 1: bad header ({wrong}): expected 'label,pixel0,...,pixel783' "
            f"(train) or 'pixel0,...,pixel783' (test), got {_short(line.strip())!r}"
        )
    return has_label, len(pixels)


def _find_bad_line(
    path: Path, lines: list[str], first_lineno: int, has_label: bool, n_cols: int
) -> DataError | None:
    """Check ``lines`` one by one in Python: slow, so only run on a block NumPy refused."""
    for lineno, line in enumerate(lines, start=first_lineno):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        where = f"{path}, line {lineno}"
        if len(fields) != n_cols:
            return DataError(
                f"{where}: expected {n_cols} comma-separated values (as in the header), "
                f"got {len(fields)}"
            )
        for col, field in enumerate(fields, start=1):
            try:
                value = int(field)
            except ValueError:
                return DataError(f"{where}, column {col}: {_short(field)!r} is not an integer")
            is_label = has_label and col == 1
            high = 9 if is_label else 255
            if not 0 <= value <= high:
                what = "label" if is_label else "pixel value"
                return DataError(f"{where}, column {col}: {what} {value} is out of range 0..{high}")
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
    """Load a Digit Recognizer ``train.csv`` or ``test.csv`` (optionally ``.gz``).

    Parsed by NumPy's C reader in blocks of lines (42000 rows in about a second);
    only a block that fails is scanned again in Python, to name its first bad line.

    Parameters
    ----------
    path : str or path-like
        The CSV file.

    Returns
    -------
    x : numpy.ndarray
        ``uint8 (N, 784)`` pixels (``(N, P)`` for a header with P pixel columns).
    y : numpy.ndarray or None
        ``int64 (N,)`` labels for ``train.csv``; None for ``test.csv``.

    Raises
    ------
    DataError
        Naming the file and line: an empty file or one with only a header, bad
        header, wrong number of values, a value that is not an integer, a pixel
        outside 0..255 or a label outside 0..9.
    """
    path = Path(path)
    blocks: list[np.ndarray] = []
    with _open_text(path) as f:
        header = f.readline()
        if not header.strip():
            raise DataError(f"{path}, line 1: empty file, expected a header line")
        has_label, n_pixels = _parse_header(path, header)
        n_cols = n_pixels + has_label
        lineno = 2
        while lines := list(itertools.islice(f, _BLOCK_LINES)):
            blocks.append(_parse_block(path, lines, lineno, has_label, n_cols))
            lineno += len(lines)
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
