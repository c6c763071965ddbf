"""The one exception type of :mod:`handgrad.data`."""

from __future__ import annotations


class DataError(ValueError):
    """A data file is missing, unreadable, damaged, or not in the expected format.

    The message is one line that always names the file (or directory) and what is
    wrong with it, with the line for a CSV file. The readers (:func:`read_idx`,
    :func:`load_kaggle_csv`, :func:`load_mnist`, :func:`payload_sha256`) raise
    nothing else for a bad file: errors of the operating system, of a corrupt gzip
    stream or of text decoding are turned into a DataError chained to the original,
    and a header claiming more data than the file holds is refused without
    allocating what it claims.
    """
