"""The one exception type of :mod:`handgrad.data`."""

from __future__ import annotations


class DataError(ValueError):
    """A data file is missing, damaged, or not in the expected format.

    The message always names the file (or directory) and what is wrong with it.
    """
