"""The thread count of the BLAS library NumPy uses, read and set at run time.

Environment variables such as ``OPENBLAS_NUM_THREADS`` only count before NumPy
is imported; the command line decides later, so it calls OpenBLAS's own
``set_num_threads``. Best effort: where NumPy uses another BLAS (Accelerate,
MKL) or the library cannot be found, nothing changes and the calls say so.
"""

from __future__ import annotations

import ctypes
import os
import sys
from functools import cache

# OpenBLAS's entry points, with the prefixes and suffixes its builds use
# (NumPy's wheels bundle "scipy_openblas" with a 64-bit-integer suffix).
_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)
_GETTERS = tuple(name.replace("set_", "get_") for name in _SETTERS)


@cache
def _openblas() -> ctypes.CDLL | None:
    """The OpenBLAS that NumPy loaded, or None."""
    import numpy  # noqa: F401  (make sure NumPy's BLAS is loaded)

    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        if not os.path.isfile(path):
            continue
        try:
            lib = ctypes.CDLL(path)  # already loaded: the same handle, no second copy
        except OSError:
            continue
        if any(hasattr(lib, name) for name in _SETTERS):
            return lib
    return None


def _function(names: tuple[str, ...]) -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    lib = _openblas()
    if lib is None:
        return None
    for name in names:
        if hasattr(lib, name):
            return getattr(lib, name)
    return None


def blas_threads() -> int | None:
    """How many threads NumPy's OpenBLAS uses, or None if it cannot be told."""
    get = _function(_GETTERS)
    return None if get is None else int(get())


def set_blas_threads(n: int) -> bool:
    """Use ``n`` BLAS threads from now on; False where that cannot be done."""
    if int(n) < 1:
        raise ValueError(f"the number of BLAS threads must be >= 1, got {n}")
    setter = _function(_SETTERS)
    if setter is None:
        return False
    setter(ctypes.c_int(int(n)))
    return True
