"""The two files a learner gets: the starter (``lab start``) and the answer (``lab export``)."""

from __future__ import annotations

from pathlib import Path

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
    text = source.read_text(encoding="utf-8")
    try:
        with open(target, "w" if force else "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise FileExistsError(f"{target} already exists; force=True overwrites it") from None
    return target


def export_lab(path: str | Path = DEFAULT_NAME, *, force: bool = False) -> Path:
    """Write handgrad's answer to the lab, a standalone NumPy-only file, to ``path``."""
    return _write(ANSWER_SOURCE, path, force)


def start_lab(path: str | Path = DEFAULT_NAME, *, force: bool = False) -> Path:
    """Write the lab's starter file (the contract, docstrings and TODOs) to ``path``."""
    return _write(STARTER_SOURCE, path, force)
