"""The pip command that installs an optional extra for *this* copy of handgrad.

``pip install "handgrad[cli]"`` installs from the package index: right for a copy
installed from there, wrong for a source checkout (it would fetch another copy, or
fail offline). pip records where a package came from (PEP 610's
``direct_url.json``): a local directory means a checkout, and the command that works
is ``pip install -e '/path/to/checkout[cli]'``. Every hint also names the packages
themselves, which work everywhere.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from urllib.parse import unquote, urlparse

#: The packages of each extra, as pyproject.toml lists them (a test keeps them equal).
EXTRAS: dict[str, tuple[str, ...]] = {
    "progress": ("tqdm",),
    "plots": ("matplotlib",),
    "cli": ("tqdm", "matplotlib", "pillow"),
    "onnx": ("onnx",),
    "sweep": ("optuna",),
    "sklearn": ("scikit-learn",),
}

#: ``pip install "handgrad[EXTRA]"`` as written in messages, for :func:`fix_hints`.
_INDEX_HINT = re.compile(r"""pip install ["']?handgrad\[(\w+)\]["']?""")


def _checkout_from_metadata() -> tuple[Path, bool] | None:
    """``(directory, editable)`` when pip installed handgrad from a local directory."""
    from importlib import metadata

    try:
        text = metadata.distribution("handgrad").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None  # installed from an index (or a wheel file)
    try:
        info = json.loads(text)
        url = urlparse(info["url"])
    except (ValueError, KeyError, TypeError):
        return None
    if url.scheme != "file" or "dir_info" not in info:
        return None
    return Path(unquote(url.path)), bool(info["dir_info"].get("editable"))


def _checkout_of_this_file() -> Path | None:
    """The checkout this module runs from when handgrad is not installed at all
    (``PYTHONPATH=src``): the directory above ``src/`` with handgrad's pyproject.toml."""
    root = Path(__file__).resolve().parents[2]
    try:
        pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(r'^name\s*=\s*"handgrad"', pyproject, re.MULTILINE) else None


def source_checkout() -> tuple[Path, bool] | None:
    """``(directory, editable)`` of the source checkout this handgrad comes from, or None
    for a copy installed from a package index."""
    from importlib import metadata

    found = _checkout_from_metadata()
    if found is not None:
        return found if (found[0] / "pyproject.toml").is_file() else None
    try:
        metadata.distribution("handgrad")
        return None  # installed, from an index
    except metadata.PackageNotFoundError:
        root = _checkout_of_this_file()
        return None if root is None else (root, True)


def install_command(extra: str) -> str:
    """The ``pip install`` command that adds ``extra`` to this copy of handgrad."""
    checkout = source_checkout()
    if checkout is None:
        return f'pip install "handgrad[{extra}]"'
    root, editable = checkout
    return f"pip install {'-e ' if editable else ''}{shlex.quote(f'{root}[{extra}]')}"


def install_hint(extra: str) -> str:
    """``install_command(extra)``, then the packages themselves:
    ``pip install -e '/src/handgrad[cli]' (or: pip install tqdm matplotlib pillow)``."""
    packages = EXTRAS.get(extra)
    alone = f" (or: pip install {' '.join(packages)})" if packages else ""
    return install_command(extra) + alone


def fix_hints(message: str) -> str:
    """``message`` with every ``pip install "handgrad[EXTRA]"`` replaced by
    :func:`install_hint`'s command for this copy of handgrad."""
    return _INDEX_HINT.sub(lambda m: install_hint(m.group(1)), message)
