"""MNIST (and anything in the same four-file IDX layout, e.g. Fashion-MNIST).

Where the files are looked for, first hit wins:

1. ``data_dir`` if given. If it lacks a file, that is an error naming the
   missing files; the search does not go on elsewhere.
2. ``$HANDGRAD_DATA``, a data root: the files in ``$HANDGRAD_DATA/mnist/``, or
   directly in ``$HANDGRAD_DATA`` itself. If the variable is set and neither
   holds the four files, that is an error too.
3. The copy shipped inside the package (:data:`SHIPPED_DIR`).
4. The user cache, ``$XDG_CACHE_HOME/handgrad/mnist`` (default
   ``~/.cache/handgrad/mnist``).
5. Only with ``download=True``: a download into the cache (or into the
   directory from step 1 or 2 when one was named).

Each file may be gzip-compressed (``train-images-idx3-ubyte.gz``) or not
(``train-images-idx3-ubyte``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from handgrad.data.download import download_verified, payload_sha256
from handgrad.data.errors import DataError
from handgrad.data.idx import read_idx

#: The four files, in the order of :class:`MNISTData`'s fields.
MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

#: SHA-256 of each file's decompressed payload (the original IDX bytes).
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train-labels-idx1-ubyte.gz": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
}

#: Public mirrors holding the four ``.gz`` files, tried in order.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: Labels read without a class count must be below this: the largest class index a
#: dataset in MNIST's layout plausibly has (EMNIST has 62 classes) is far below it,
#: while an output layer of 65536 units is still an ordinary allocation.
MAX_CLASSES = 1 << 16

#: The copy shipped inside the package (a module attribute so tests can move it).
SHIPPED_DIR: Path = Path(__file__).parent / "mnist"

ENV_VAR = "HANDGRAD_DATA"


class MNISTData(NamedTuple):
    """The four MNIST arrays.

    Shape: ``x_train`` ``(60000, 28, 28)`` uint8, ``y_train`` ``(60000,)`` int64,
    ``x_test`` ``(10000, 28, 28)`` uint8, ``y_test`` ``(10000,)`` int64
    (for MNIST; other IDX datasets keep their own sizes).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# -- locating the files ---------------------------------------------------------


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/handgrad/mnist``, or ``~/.cache/handgrad/mnist`` when unset."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "handgrad" / "mnist"


def _resolve(directory: Path, name: str) -> Path | None:
    """The file ``name`` in ``directory`` (``.gz`` first, then uncompressed); None if absent."""
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def missing_files(directory: str | os.PathLike[str]) -> list[str]:
    """Names from :data:`MNIST_FILES` not present (as ``.gz`` or raw) in ``directory``."""
    directory = Path(directory)
    return [name for name in MNIST_FILES if _resolve(directory, name) is None]


def _where_to_put(extra: Sequence[Path] = (), offer_download: bool = True) -> str:
    """Where the files may go; after a failed download, no advice to download again."""
    places = [*(str(p) for p in extra), f"${ENV_VAR}/mnist", str(cache_dir())]
    unique = list(dict.fromkeys(places))
    fetch = (
        "; or fetch them with load_mnist(download=True) (--download on the command line)"
        if offer_download
        else ""
    )
    return (
        f"Put the four MNIST files ({', '.join(MNIST_FILES)}; gzip-compressed or not) in "
        f"one of: {'; '.join(unique)}; or in any directory passed as data_dir= "
        f"(--data-dir on the command line). Set {ENV_VAR} to choose the data root{fetch}."
    )


def find_mnist(data_dir: str | os.PathLike[str] | None = None, *, download: bool = False) -> Path:
    """Directory holding the four MNIST files, searched in the order of the module doc.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Use exactly this directory (no fallback to other places).
    download : bool
        Fetch missing files (see :func:`download_mnist`) instead of failing.

    Raises
    ------
    DataError
        Naming the missing files and where they were looked for.
    """
    if data_dir is not None:
        directory = Path(data_dir).expanduser()
        missing = missing_files(directory)
        if not missing:
            return directory
        if download:
            return download_mnist(directory)
        raise DataError(
            f"data directory {directory} is missing {', '.join(missing)} "
            "(gzip-compressed or not). " + _where_to_put()
        )

    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        for directory in (root / "mnist", root):
            if not missing_files(directory):
                return directory
        if download:
            return download_mnist(root / "mnist")
        raise DataError(
            f"${ENV_VAR} is {env!r} but neither {root / 'mnist'} nor {root} holds all four "
            f"MNIST files (missing in {root / 'mnist'}: "
            f"{', '.join(missing_files(root / 'mnist'))}). " + _where_to_put()
        )

    looked: list[str] = [f"${ENV_VAR}: not set"]
    for label, directory in (("shipped copy", SHIPPED_DIR), ("user cache", cache_dir())):
        missing = missing_files(directory)
        if not missing:
            return directory
        looked.append(f"{label} {directory}: missing {', '.join(missing)}")
    if download:
        return download_mnist(cache_dir())
    raise DataError(
        "MNIST not found. Looked in:\n"
        + "\n".join(f"  - {line}" for line in looked)
        + "\n"
        + _where_to_put()
    )


# -- loading ----------------------------------------------------------------------


def load_idx_dataset(
    directory: str | os.PathLike[str], *, num_classes: int | None = None
) -> MNISTData:
    """Load the four MNIST-named IDX files from ``directory`` and check they fit together.

    Works for any dataset in MNIST's layout (Fashion-MNIST, ...): image sizes are
    taken from the files.

    Parameters
    ----------
    directory : str or path-like
        Holds the files of :data:`MNIST_FILES`, gzip-compressed or not.
    num_classes : int, optional
        If given, every label must be in ``0 .. num_classes - 1``; otherwise any
        label in ``0 .. MAX_CLASSES - 1`` is accepted (infer the class count as
        ``max + 1``). A larger label is refused as implausible: it would give a
        network that many outputs.

    Returns
    -------
    MNISTData
        Images ``uint8 (N, H, W)``, labels ``int64 (N,)``.
    """
    directory = Path(directory)
    paths: list[Path] = []
    for name in MNIST_FILES:
        path = _resolve(directory, name)
        if path is None:
            raise DataError(f"{directory / name}: no such file (nor without .gz)")
        paths.append(path)
    arrays: list[np.ndarray] = []
    for images_path, labels_path in ((paths[0], paths[1]), (paths[2], paths[3])):
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(
                f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} "
                f"array of shape {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(
                f"{labels_path}: expected integer labels of shape (N,), got {labels.dtype} "
                f"array of shape {labels.shape}"
            )
        if len(labels) != len(images):
            raise DataError(
                f"{labels_path}: {len(labels)} labels, but {images_path.name} has "
                f"{len(images)} images"
            )
        # Labels are class indices: never negative, below num_classes when given,
        # and without it below MAX_CLASSES: a network gets max label + 1 outputs, so
        # one stray 2**31 - 1 would otherwise ask for billions of them.
        high = MAX_CLASSES if num_classes is None else num_classes
        bad = np.flatnonzero((labels < 0) | (labels >= high))
        if bad.size:
            if num_classes is not None:
                hint = " (num_classes=None accepts other class indices)"
            elif labels[bad[0]] >= MAX_CLASSES:
                hint = (
                    f": a class index of {MAX_CLASSES} or more is implausible (a network gets "
                    "max label + 1 outputs); is this really a labels file?"
                )
            else:
                hint = ""
            raise DataError(
                f"{labels_path}: labels must be in 0..{high - 1}, found {labels[bad[0]]} at "
                f"index {bad[0]} ({bad.size} out of range in all){hint}"
            )
        arrays += [images, labels.astype(np.int64)]
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise DataError(
            f"{directory}: training images are {arrays[0].shape[1:]} but test images are "
            f"{arrays[2].shape[1:]}"
        )
    return MNISTData(*arrays)


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    num_classes: int | None = 10,
) -> MNISTData:
    """Load MNIST (or a dataset in its layout) from the first place that has it.

    Parameters
    ----------
    data_dir : str or path-like, optional
        A directory holding the four files; default: search (see module doc).
    download : bool
        Download the files if they are found nowhere.
    num_classes : int or None
        Labels must lie in ``0 .. num_classes - 1`` (default 10, the digits; the
        lab and ``handgrad evaluate`` assume ten classes). ``None`` accepts any
        label from 0, for a dataset with other classes in the same layout
        (e.g. EMNIST letters); the class count is then ``max label + 1``, and a
        label of :data:`MAX_CLASSES` or more is refused.

    Returns
    -------
    MNISTData
        ``(x_train, y_train, x_test, y_test)``; images ``uint8 (N, 28, 28)``, labels
        ``int64 (N,)`` in ``0 .. num_classes - 1``. Convert images per batch with
        :func:`handgrad.data.to_float_images`.
    """
    return load_idx_dataset(find_mnist(data_dir, download=download), num_classes=num_classes)


# -- checking and fetching ----------------------------------------------------------


def verify_mnist(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Check the four files' decompressed SHA-256 against :data:`MNIST_SHA256`.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Directory to check; default: the one :func:`find_mnist` picks.

    Returns
    -------
    pathlib.Path
        The directory checked.

    Raises
    ------
    DataError
        Listing every missing file and every mismatch (expected and actual hash).
    """
    directory = find_mnist() if data_dir is None else Path(data_dir).expanduser()
    problems: list[str] = []
    for name in MNIST_FILES:
        path = _resolve(directory, name)
        if path is None:
            problems.append(f"{directory / name}: missing")
            continue
        actual = payload_sha256(path)
        if actual != MNIST_SHA256[name]:
            problems.append(
                f"{path}: checksum mismatch: expected sha256 {MNIST_SHA256[name]}, got {actual}"
            )
    if problems:
        raise DataError("MNIST verification failed:\n" + "\n".join(f"  - {p}" for p in problems))
    return directory


def _check_existing(path: Path, expected: str) -> None:
    """Refuse to overwrite a file that is there but is not the expected MNIST file."""
    try:
        actual = payload_sha256(path)
    except DataError as exc:
        actual = f"unreadable ({exc})"
    if actual != expected:
        raise DataError(
            f"{path} exists but is not the MNIST file (expected sha256 {expected}, got "
            f"{actual}); it is left alone: delete it to download a fresh copy"
        )


def download_mnist(
    dest_dir: str | os.PathLike[str],
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download the four MNIST files into ``dest_dir``, verified and atomically.

    Files already there with the right checksum are kept; one there with another
    checksum is an error (user files are never overwritten). Each missing file is
    tried from every mirror in turn; see
    :func:`handgrad.data.download.download_verified`.

    Parameters
    ----------
    dest_dir : str or path-like
        Created if needed.
    mirrors : sequence of str, optional
        Base URLs ending in the directory of the files; default :data:`DEFAULT_MIRRORS`.
    timeout : float
        Seconds per connection and read.

    Returns
    -------
    pathlib.Path
        ``dest_dir``.

    Raises
    ------
    DataError
        If a file cannot be fetched from any mirror (the message says where to put
        the files by hand), or a file already there has the wrong checksum.
    """
    dest = Path(dest_dir).expanduser()
    bases = DEFAULT_MIRRORS if mirrors is None else tuple(mirrors)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create {dest}: {exc}. " + _where_to_put(offer_download=False)
        ) from exc
    missing = []
    for name in MNIST_FILES:  # check what is there before fetching anything
        present = _resolve(dest, name)
        if present is None:
            missing.append(name)
        else:
            _check_existing(present, MNIST_SHA256[name])
    for name in missing:
        urls = [base.rstrip("/") + "/" + name for base in bases]
        download_verified(
            urls,
            dest / name,
            MNIST_SHA256[name],
            timeout=timeout,
            hint=_where_to_put([dest], offer_download=False),
        )
    return dest
