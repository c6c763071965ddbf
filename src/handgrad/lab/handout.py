"""The two files a learner gets: the starter (``lab start``) and the answer (``lab export``)."""

from __future__ import annotations

from pathlib import Path

from handgrad._argtypes import output_file_problem
from handgrad._atomic import atomic_write

ANSWER_SOURCE = Path(__file__).with_name("answer.py")
STARTER_SOURCE = Path(__file__).with_name("starter.py")
DEFAULT_NAME = "neural_network.py"


def _write(source: Path, path: str | Path, force: bool) -> Path:
    """Copy ``source`` to ``path`` (a directory gets ``neural_network.py``).

    Raises FileExistsError, leaving the file untouched, when it exists and ``force``
    is false: a learner's work is never overwritten by accident.
    """
    target = Path(path)
    if target.is_dir():
        target = target / DEFAULT_NAME
    if target.exists() and not force:
        raise FileExistsError(f"{target} already exists; force=True overwrites it")
    problem = output_file_problem(target, DEFAULT_NAME)
    if problem:
        raise OSError(f"{target}: {problem}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # written whole or not at all: an interrupted --force never leaves half a file
    return atomic_write(target, lambda f: f.write(source.read_bytes()))


def export_lab(path: str | Path = DEFAULT_NAME, *, force: bool = False) -> Path:
    """Write handgrad's answer to the lab, a standalone NumPy-only file, to ``path``."""
    return _write(ANSWER_SOURCE, path, force)


def start_lab(path: str | Path = DEFAULT_NAME, *, force: bool = False) -> Path:
    """Write the lab's starter file (the contract, docstrings and TODOs) to ``path``."""
    return _write(STARTER_SOURCE, path, force)
