"""Turn a photo or drawing of one digit into an MNIST-style 28x28 image.

MNIST digits are white on black, their bounding box scaled to fit 20x20 with
the aspect ratio kept, then placed in a 28x28 frame so that the centre of mass
sits at the centre. :func:`preprocess_digit` does the same in NumPy;
:func:`load_image` reads PNG/JPG files with Pillow (imported lazily).
"""

from __future__ import annotations

import os

import numpy as np


class ImageError(ValueError):
    """An image file cannot be read, or holds nothing that looks like a digit.

    The message names the file (when there is one) and what is wrong with it.
    """


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as grayscale floats in ``[0, 1]``, shape ``(H, W)``.

    Raises
    ------
    ImageError
        If the file is not an image Pillow can read.
    ImportError
        If Pillow is not installed.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from handgrad._install import install_hint

        raise ImportError(f"reading images needs Pillow: {install_hint('cli')}") from exc
    try:
        with Image.open(path) as img:
            if img.mode in ("RGBA", "LA") or "transparency" in img.info:
                # Composite transparent drawings on white, as they are shown on screen.
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            gray = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from exc
    return gray


def _area_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of area resampling: each output pixel averages the
    input interval it covers, with partial pixels weighted by overlap."""
    scale = n_in / n_out
    starts = np.arange(n_out)[:, None] * scale
    ends = starts + scale
    left = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(ends, left + 1) - np.maximum(starts, left), 0.0, None)
    return overlap / scale


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a 2-D array by area averaging (no aliasing when shrinking)."""
    return _area_matrix(height, image.shape[0]) @ image @ _area_matrix(width, image.shape[1]).T


def _border(img: np.ndarray) -> np.ndarray:
    return np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])


def preprocess_digit(gray: np.ndarray, box: int = 20, size: int = 28) -> np.ndarray:
    """MNIST-style preprocessing of a single-digit grayscale image.

    Parameters
    ----------
    gray : ndarray
        ``(H, W)`` grayscale, floats in [0, 1] or uint8.

    Returns
    -------
    ndarray
        ``(size, size)`` uint8, white digit on black, centred by mass.

    Raises
    ------
    ImageError
        If the image is not 2-D, or is blank (no stroke stands out of the background).
    """
    img = np.asarray(gray, dtype=np.float64)
    if img.ndim != 2:
        raise ImageError(f"expected a 2-D grayscale image, got shape {img.shape}")
    if np.issubdtype(np.asarray(gray).dtype, np.integer):
        img = img / 255.0
    if _border(img).mean() > 0.5:  # dark ink on a light background: make it light on dark
        img = 1.0 - img
    img = np.clip(img - np.median(_border(img)), 0.0, None)  # background to exactly 0
    peak = img.max()
    if peak <= 0.05:
        raise ImageError("the image looks blank: no digit found")
    img = img / peak
    rows = np.flatnonzero(img.max(axis=1) > 0.2)
    cols = np.flatnonzero(img.max(axis=0) > 0.2)
    img = img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = img.shape
    scale = box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    digit = resize_area(img, new_h, new_w)
    # Place so that the centre of mass lands on the frame's centre.
    ys, xs = np.indices(digit.shape)
    mass = digit.sum()
    cy, cx = (ys * digit).sum() / mass, (xs * digit).sum() / mass
    top = int(np.clip(round(size / 2 - cy), 0, size - new_h))
    left = int(np.clip(round(size / 2 - cx), 0, size - new_w))
    out = np.zeros((size, size))
    out[top : top + new_h, left : left + new_w] = digit
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
